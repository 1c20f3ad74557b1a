package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// TestCLIEnrollBackupRevoke drives enrollment through the CLI: an admin creates a token,
// the host enrolls without any configuration, backs up with the written coffer.yaml at
// once; the token cannot be used again; after the admin revokes the agent's serial, its
// backup is refused.
func TestCLIEnrollBackupRevoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := nodetest.New(t, nodetest.Opts{})
	dir := t.TempDir()
	adminEnv := map[string]string{"COFFER_CONFIG": node.DevClientConfig(c.Dir)}
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := cli(t, adminEnv, "admin", "enroll-token", "create", "--vault", "web", "--name", "web01", "--ttl", "1h")
	if code != exitOK || !strings.HasPrefix(out, "coffer-enroll-") || !strings.Contains(stderr, "agent web01") {
		t.Fatalf("enroll-token create: exit %d: %s %s", code, out, stderr)
	}
	token := strings.TrimSpace(out)
	if code, _, stderr := cli(t, adminEnv, "admin", "enroll-token", "create"); code != exitUsage || !strings.Contains(stderr, "--vault is required") {
		t.Fatalf("enroll-token create without --vault: exit %d: %s", code, stderr)
	}
	if code, _, stderr := cli(t, adminEnv, "admin", "enroll-token", "create", "--vault", "web"); code != exitUsage || !strings.Contains(stderr, "--name is required") {
		t.Fatalf("enroll-token create without --name: exit %d: %s", code, stderr)
	}

	out1 := filepath.Join(dir, "agent")
	enrollArgs := []string{"--json", "agent", "enroll", "--token", token, "--meta", strings.Join(f.Meta, ","), "--ca", f.CA, "--out", out1}
	code, out, stderr = cli(t, map[string]string{}, enrollArgs...)
	if code != exitOK {
		t.Fatalf("agent enroll: exit %d: %s %s", code, out, stderr)
	}
	res := lastJSON(t, out)
	serial, _ := res["serial"].(string)
	if res["principal"] != "web01" || res["vault"] != "web" || serial == "" {
		t.Fatalf("agent enroll: %v", res)
	}
	agentEnv := map[string]string{
		"COFFER_CONFIG":     filepath.Join(out1, "coffer.yaml"),
		"COFFER_PASSPHRASE": "enroll test passphrase",
		"COFFER_CACHE_DIR":  filepath.Join(dir, "cache"),
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, agentEnv, "init"); code != exitOK {
		t.Fatalf("enrolled agent init: exit %d: %s", code, stderr)
	}
	if code, _, stderr := cli(t, agentEnv, "backup", src); code != exitOK {
		t.Fatalf("enrolled agent backup: exit %d: %s", code, stderr)
	}
	enrollArgs[len(enrollArgs)-1] = filepath.Join(dir, "again")
	if code, _, stderr := cli(t, map[string]string{}, enrollArgs...); code != exitFailure || !strings.Contains(stderr, "already used") {
		t.Fatalf("token reuse: exit %d: %s", code, stderr)
	}

	// A second token leaks: the list shows it live, the admin revokes it by an ID prefix,
	// and it no longer enrolls; the used token cannot be revoked (its certificate can).
	code, out, stderr = cli(t, adminEnv, "--json", "admin", "enroll-token", "create", "--vault", "web", "--name", "web02")
	if code != exitOK {
		t.Fatalf("second token: exit %d: %s", code, stderr)
	}
	leaked := lastJSON(t, out)
	leakedID, _ := leaked["id"].(string)
	code, out, _ = cli(t, adminEnv, "admin", "enroll-token", "list")
	if code != exitOK || !strings.Contains(out, leakedID) || !strings.Contains(out, "1 live enrollment token") {
		t.Fatalf("enroll-token list: exit %d: %s", code, out)
	}
	code, out, _ = cli(t, adminEnv, "admin", "enroll-token", "list", "--all")
	if code != exitOK || !strings.Contains(out, "used") || !strings.Contains(out, serial) || !strings.Contains(out, "2 enrollment tokens") {
		t.Fatalf("enroll-token list --all: exit %d: %s", code, out)
	}
	code, out, stderr = cli(t, adminEnv, "admin", "enroll-token", "revoke", leakedID[:8], "--reason", "pasted in a ticket")
	if code != exitOK || !strings.Contains(out, "revoked enrollment token "+leakedID) {
		t.Fatalf("enroll-token revoke: exit %d: %s %s", code, out, stderr)
	}
	leakedArgs := []string{"agent", "enroll", "--token", strings.TrimSpace(leaked["token"].(string)), "--meta", strings.Join(f.Meta, ","), "--ca", f.CA, "--out", filepath.Join(dir, "leaked")}
	if code, _, stderr := cli(t, map[string]string{}, leakedArgs...); code != exitFailure || !strings.Contains(stderr, "revoked") {
		t.Fatalf("enroll with a revoked token: exit %d: %s", code, stderr)
	}
	code, out, _ = cli(t, adminEnv, "--json", "admin", "enroll-token", "list", "--all")
	var all []map[string]any
	if err := json.Unmarshal([]byte(out), &all); code != exitOK || err != nil || len(all) != 2 {
		t.Fatalf("enroll-token list --all --json: exit %d: %v: %s", code, err, out)
	}
	if all[0]["state"] != "used" || all[0]["serial"] != serial || all[1]["state"] != "revoked" || all[1]["revoke_reason"] != "pasted in a ticket" {
		t.Fatalf("enroll-token list --all --json: %v", all)
	}
	if _, ok := all[1]["used_at"]; ok {
		t.Fatalf("an unused token lists used_at: %v", all[1])
	}
	if code, _, stderr := cli(t, adminEnv, "admin", "enroll-token", "revoke", tokenID(token)); code != exitFailure || !strings.Contains(stderr, "coffer admin cert revoke --serial "+serial) {
		t.Fatalf("revoke a used token: exit %d: %s", code, stderr)
	}
	if code, _, stderr := cli(t, adminEnv, "admin", "enroll-token", "revoke", "xyz"); code != exitUsage || !strings.Contains(stderr, "8 to 16 hex digits") {
		t.Fatalf("revoke with a bad ID: exit %d: %s", code, stderr)
	}

	code, out, stderr = cli(t, adminEnv, "admin", "cert", "revoke", "--serial", serial, "--reason", "test")
	if code != exitOK || !strings.Contains(out, "revoked certificate serial "+serial) {
		t.Fatalf("cert revoke: exit %d: %s %s", code, out, stderr)
	}
	if code, out, _ := cli(t, adminEnv, "admin", "cert", "list"); code != exitOK || !strings.Contains(out, serial) || !strings.Contains(out, "1 revocation") {
		t.Fatalf("cert list: exit %d: %s", code, out)
	}
	if code, _, stderr := cli(t, adminEnv, "admin", "cert", "revoke", "--serial", serial, "--principal", "x"); code != exitUsage {
		t.Fatalf("revoke with both: exit %d: %s", code, stderr)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _, stderr := cli(t, agentEnv, "backup", src)
		if code == exitFailure && strings.Contains(stderr, "revoked") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backup with a revoked certificate: exit %d: %s", code, stderr)
		}
		time.Sleep(100 * time.Millisecond) // nodes pick the revocation up within about a second
	}
}

// tokenID is the ID the cluster shows for an enrollment token.
func tokenID(token string) string { return meta.EnrollTokenID(meta.EnrollTokenHash(token)) }
