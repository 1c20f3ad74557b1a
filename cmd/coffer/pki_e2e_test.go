package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// TestCLICertificates drives the certificate commands: a key and CSR made on a
// workstation, an admin certificate issued from it (and refused for another name), a node
// join token listed with the token commands, an agent renewing its certificate, and the
// lifetimes in admin cert list and admin status.
func TestCLICertificates(t *testing.T) {
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
	key, csr := filepath.Join(dir, "bob-key.pem"), filepath.Join(dir, "bob.csr")
	if code, out, stderr := cli(t, nil, "cert", "request", "--principal", "bob", "--key", key, "--csr", csr); code != exitOK {
		t.Fatalf("cert request: exit %d: %s %s", code, out, stderr)
	}
	if code, _, stderr := cli(t, nil, "cert", "request", "--principal", "bob", "--key", key, "--csr", csr); code != exitFailure || !strings.Contains(stderr, "never overwritten") {
		t.Fatalf("cert request over an existing key: exit %d: %s", code, stderr)
	}
	if code, _, stderr := cli(t, adminEnv, "admin", "cert", "issue", "--role", "admin", "--principal", "mallory", "--csr", csr); code != exitFailure || !strings.Contains(stderr, `is for "bob", not "mallory"`) {
		t.Fatalf("issue for another principal: exit %d: %s", code, stderr)
	}
	bobPEM := filepath.Join(dir, "bob.pem")
	code, out, stderr := cli(t, adminEnv, "--json", "admin", "cert", "issue", "--role", "admin", "--principal", "bob", "--csr", csr, "--out", bobPEM)
	if code != exitOK {
		t.Fatalf("cert issue: exit %d: %s %s", code, out, stderr)
	}
	issued := lastJSON(t, out)
	if issued["principal"] != "bob" || issued["role"] != "admin" || issued["not_after"] == nil {
		t.Fatalf("cert issue --json: %v", issued)
	}
	bobCfg := filepath.Join(dir, "bob.yaml")
	if err := clientconfig.Save(bobCfg, clientconfig.File{Meta: f.Meta, CA: f.CA, Cert: bobPEM, Key: key}); err != nil {
		t.Fatal(err)
	}
	bobEnv := map[string]string{"COFFER_CONFIG": bobCfg}

	code, out, stderr = cli(t, bobEnv, "--json", "admin", "node-token", "create", "--role", "chunk", "--id", "chunk-9", "--domain", "rack-9")
	if code != exitOK {
		t.Fatalf("node-token create by the issued admin: exit %d: %s %s", code, out, stderr)
	}
	nt := lastJSON(t, out)
	if !strings.HasPrefix(nt["token"].(string), "coffer-enroll-") || nt["node"] != "chunk-9" || nt["role"] != "chunk" {
		t.Fatalf("node-token create --json: %v", nt)
	}
	if code, _, stderr := cli(t, adminEnv, "admin", "node-token", "create", "--role", "storage", "--id", "x1"); code != exitUsage {
		t.Fatalf("node-token with a bad role: exit %d: %s", code, stderr)
	}
	code, out, _ = cli(t, adminEnv, "--json", "admin", "enroll-token", "list")
	var toks []map[string]any
	if err := json.Unmarshal([]byte(out), &toks); code != exitOK || err != nil || len(toks) != 1 || toks[0]["kind"] != "node" || toks[0]["domain"] != "rack-9" {
		t.Fatalf("enroll-token list shows the node token: exit %d: %v: %s", code, err, out)
	}

	// An agent enrolls and renews.
	code, out, _ = cli(t, adminEnv, "admin", "enroll-token", "create", "--vault", "web", "--name", "web01")
	if code != exitOK {
		t.Fatalf("enroll-token create: exit %d", code)
	}
	agentDir := filepath.Join(dir, "agent")
	code, out, stderr = cli(t, nil, "--json", "agent", "enroll", "--token", strings.TrimSpace(out), "--meta", strings.Join(f.Meta, ","), "--ca", f.CA, "--out", agentDir)
	if code != exitOK {
		t.Fatalf("agent enroll: exit %d: %s %s", code, out, stderr)
	}
	oldSerial := lastJSON(t, out)["serial"]
	agentEnv := map[string]string{"COFFER_CONFIG": filepath.Join(agentDir, "coffer.yaml")}
	code, out, stderr = cli(t, agentEnv, "--json", "agent", "renew")
	if code != exitOK {
		t.Fatalf("agent renew: exit %d: %s %s", code, out, stderr)
	}
	ren := lastJSON(t, out)
	if ren["principal"] != "web01" || ren["role"] != "agent" || ren["serial"] == oldSerial {
		t.Fatalf("agent renew --json: %v (old serial %v)", ren, oldSerial)
	}
	if _, err := os.Stat(filepath.Join(agentDir, "agent-key.pem.old")); err != nil {
		t.Fatalf("old key not kept: %v", err)
	}
	// The renewed certificate works.
	if code, _, stderr := cli(t, agentEnv, "--json", "agent", "renew"); code != exitOK {
		t.Fatalf("second renewal with the renewed certificate: exit %d: %s", code, stderr)
	}

	code, out, _ = cli(t, adminEnv, "--json", "admin", "cert", "list")
	var list certListJSON
	if err := json.Unmarshal([]byte(out), &list); code != exitOK || err != nil {
		t.Fatalf("cert list --json: exit %d: %v: %s", code, err, out)
	}
	hows := map[string]int{}
	for _, e := range list.Certificates {
		hows[e.Principal+"/"+e.How]++
		if e.State != "valid" || !e.NotAfter.After(e.NotBefore) {
			t.Errorf("cert list entry %+v", e)
		}
	}
	if hows["bob/issue"] != 1 || hows["web01/enroll"] != 1 || hows["web01/renew"] != 2 {
		t.Fatalf("cert list: %v", hows)
	}
	code, out, _ = cli(t, adminEnv, "--json", "admin", "status")
	var st clusterStatus
	if err := json.Unmarshal([]byte(out), &st); code != exitOK || err != nil {
		t.Fatalf("admin status --json: exit %d: %v", code, err)
	}
	for _, n := range st.Nodes {
		if n.State == nodeUp && n.CertNotAfter.IsZero() {
			t.Errorf("node %s reports no certificate expiry", n.ID)
		}
	}
	if len(st.Warnings) != 0 {
		t.Errorf("fresh certificates warned about: %v", st.Warnings)
	}
}
