package main

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/node/nodetest"
)

// TestCLIKeys drives the key commands against a cluster: back up, vault rotate-key, back
// up, rotate-key, back up, vault passphrase change; vault keys --json shows epoch 2 and one
// passphrase wrap; every snapshot restores bit-identical with the new passphrase and the
// old one is refused. A platform-managed vault restores with --platform and no
// passphrase at all; switching it to customer removes the platform wrap and rotates, after
// which --platform is refused.
func TestCLIKeys(t *testing.T) {
	env, dir := cliVault(t, "key test passphrase")
	var ids, srcs []string
	for i := range 3 {
		src := filepath.Join(dir, "src", string(rune('a'+i)))
		nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: uint64(70 + i)})
		code, out, stderr := cli(t, env, "--json", "backup", src)
		if code != exitOK {
			t.Fatalf("backup: exit %d: %s", code, stderr)
		}
		ids, srcs = append(ids, lastJSON(t, out)["snapshot_id"].(string)), append(srcs, src)
		if i < 2 {
			if code, out, stderr := cli(t, env, "vault", "rotate-key", "--reason", "test"); code != exitOK || !strings.Contains(out, "key epoch "+string(rune('1'+i))) {
				t.Fatalf("rotate-key: exit %d: %s %s", code, out, stderr)
			}
		}
	}
	newEnv := maps.Clone(env)
	newEnv["COFFER_NEW_PASSPHRASE"] = "the new key test passphrase"
	if code, out, stderr := cli(t, newEnv, "vault", "passphrase", "change"); code != exitOK {
		t.Fatalf("passphrase change: exit %d: %s %s", code, out, stderr)
	}
	code, out, stderr := cli(t, env, "--json", "vault", "keys")
	var keys vaultKeysJSON
	if err := json.Unmarshal([]byte(out), &keys); code != exitOK || err != nil {
		t.Fatalf("vault keys --json: exit %d: %v %s %s", code, err, out, stderr)
	}
	if keys.Management != "customer" || keys.Epoch != 2 || len(keys.Wraps) != 1 || keys.Wraps[0].Kind != "passphrase" || strings.Contains(out, "keyring") {
		t.Fatalf("vault keys: %s", out)
	}
	if code, _, stderr := cli(t, env, "restore", ids[0][:8], "--target", filepath.Join(dir, "old")); code != exitFailure || !strings.Contains(stderr, "wrong passphrase") {
		t.Fatalf("restore with the old passphrase: exit %d: %s", code, stderr)
	}
	newPass := maps.Clone(env)
	newPass["COFFER_PASSPHRASE"] = newEnv["COFFER_NEW_PASSPHRASE"]
	for i, id := range ids {
		target := filepath.Join(dir, "r", id[:8])
		if code, _, stderr := cli(t, newPass, "restore", id[:8], "--target", target); code != exitOK {
			t.Fatalf("restore %d with the new passphrase: exit %d: %s", i, code, stderr)
		}
		nodetest.CompareTrees(t, srcs[i], filepath.Join(target, filepath.Base(srcs[i])))
	}

	plat := maps.Clone(env)
	plat["COFFER_CACHE_DIR"] = filepath.Join(dir, "cache2")
	if code, out, stderr := cli(t, plat, "--vault", "plat", "init", "--key-management", "platform"); code != exitOK || !strings.Contains(out, "the platform can decrypt this vault") {
		t.Fatalf("init platform: exit %d: %s %s", code, out, stderr)
	}
	src := filepath.Join(dir, "src", "plat")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 80})
	code, out, stderr = cli(t, plat, "--json", "--vault", "plat", "backup", src)
	if code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	pid := lastJSON(t, out)["snapshot_id"].(string)
	noPass := map[string]string{"COFFER_CONFIG": env["COFFER_CONFIG"]}
	target := filepath.Join(dir, "rp")
	if code, _, stderr := cli(t, noPass, "--vault", "plat", "restore", pid[:8], "--platform", "--target", target); code != exitOK {
		t.Fatalf("restore --platform without a passphrase: exit %d: %s", code, stderr)
	}
	nodetest.CompareTrees(t, src, filepath.Join(target, "plat"))
	if code, out, stderr := cli(t, plat, "--json", "--vault", "plat", "vault", "keys", "management", "customer", "--reason", "tenant"); code != exitOK || !strings.Contains(out, `"management":"customer"`) || !strings.Contains(out, `"epoch":1`) || strings.Contains(out, `"kind":"platform"`) {
		t.Fatalf("management customer: exit %d: %s %s", code, out, stderr)
	}
	if code, _, stderr := cli(t, noPass, "--vault", "plat", "restore", pid[:8], "--platform", "--target", filepath.Join(dir, "rp2")); code != exitFailure || !strings.Contains(stderr, "customer-managed") {
		t.Fatalf("restore --platform of a customer-managed vault: exit %d: %s", code, stderr)
	}
	code, out, _ = cli(t, env, "--json", "admin", "audit")
	for _, want := range []string{"vault keys rotate-key", "vault keys passphrase change", "vault keys platform-unwrap", "vault keys key-management customer"} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("audit log lacks %q", want)
		}
	}
}
