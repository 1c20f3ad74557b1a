package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// cli runs coffer against a test cluster with a real clock and returns the exit code and
// output.
func cli(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code := run(ctx, args, strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	return code, stdout.String(), stderr.String()
}

// cliVault starts a dev cluster for the test (skipped under -short), runs "coffer init"
// against it with passphrase and returns the CLI's environment (config, passphrase and a
// cache directory of the test's own) and the test's temporary directory.
func cliVault(t *testing.T, passphrase string) (env map[string]string, dir string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := nodetest.New(t, nodetest.Opts{})
	dir = t.TempDir()
	env = map[string]string{
		"COFFER_CONFIG":     node.DevClientConfig(c.Dir),
		"COFFER_PASSPHRASE": passphrase,
		"COFFER_CACHE_DIR":  filepath.Join(dir, "cache"),
	}
	if code, _, stderr := cli(t, env, "init"); code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	return env, dir
}

// lastJSON decodes the last line of out.
func lastJSON(t *testing.T, out string) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	return m
}

// TestCLIBlockBackupDirtyMapHooks drives the coffer CLI against a cluster over QUIC:
// backup --block, an incremental run with --dirty-map, restore --image, and a failing
// --pre-hook that aborts while the --post-hook still runs.
func TestCLIBlockBackupDirtyMapHooks(t *testing.T) {
	env, dir := cliVault(t, "block test passphrase")
	img := filepath.Join(dir, "disk.img")
	content := bytes.Repeat([]byte("coffer block test "), (8<<20)/18+1)[:8<<20]
	for i := range content { // make it incompressible enough to count
		content[i] ^= byte(i * 7 >> 3)
	}
	clear(content[2<<20 : 3<<20])
	if err := os.WriteFile(img, content, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := cli(t, env, "--json", "backup", "--block", "--block-size", "1M", img)
	if code != exitOK {
		t.Fatalf("backup --block: exit %d: %s", code, stderr)
	}
	sum := lastJSON(t, out)
	blocks, _ := sum["blocks"].(map[string]any)
	if sum["message_type"] != "summary" || blocks["total"] != 8.0 || blocks["holes"] != 1.0 || blocks["block_size"] != float64(1<<20) {
		t.Fatalf("summary %v", sum)
	}

	copy(content[5<<20+100:], "changed")
	if err := os.WriteFile(img, content, 0o600); err != nil {
		t.Fatal(err)
	}
	dm := filepath.Join(dir, "changes.map")
	if err := os.WriteFile(dm, []byte("coffer-dirty-map 1\nblock-size 4096\n1280 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = cli(t, env, "--json", "backup", "--block", "--block-size", "1M", "--dirty-map", dm, img)
	if code != exitOK {
		t.Fatalf("backup --dirty-map: exit %d: %s", code, stderr)
	}
	sum = lastJSON(t, out)
	blocks, _ = sum["blocks"].(map[string]any)
	if blocks["read"] != 1.0 || blocks["reused"] != 7.0 || blocks["changed"] != 1.0 || sum["bytes_read"] != float64(1<<20) {
		t.Fatalf("dirty-map summary %v", sum)
	}

	out2 := filepath.Join(dir, "restored.img")
	if code, _, stderr := cli(t, env, "restore", "--image", out2, "latest"); code != exitOK {
		t.Fatalf("restore --image: exit %d: %s", code, stderr)
	}
	if got, _ := os.ReadFile(out2); !bytes.Equal(got, content) {
		t.Fatal("restored image differs")
	}

	marker := filepath.Join(dir, "post-ran")
	code, _, stderr = cli(t, env, "backup", "--pre-hook", "exit 4", "--post-hook", "echo $COFFER_BACKUP_STATUS > "+marker, "--block", img)
	if code != exitFailure || !strings.Contains(stderr, "pre-hook") || !strings.Contains(stderr, "exit status 4") {
		t.Errorf("failing pre-hook: exit %d, stderr %q", code, stderr)
	}
	if b, err := os.ReadFile(marker); err != nil || strings.TrimSpace(string(b)) != "not run" {
		t.Errorf("post-hook after a failed pre-hook: %q %v", b, err)
	}
	code, out, _ = cli(t, env, "--json", "snapshots")
	var snaps []any
	if code != exitOK || json.Unmarshal([]byte(out), &snaps) != nil || len(snaps) != 2 {
		t.Errorf("snapshots after the aborted backup: exit %d, %q", code, out)
	}
}
