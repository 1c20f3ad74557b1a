package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/kms/kmstest"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// TestCLIKMSAndEscrow drives the KMS and escrow commands against a cluster, the plugin
// being this test binary behind a coffer-kms wrapper named in kms_plugins: vault keys
// add-kms; restore with no passphrase (through the KMS); vault keys rotate-kms (version
// 2, same wrap); ls; the key disabled: ls fails naming the key, and with the passphrase
// at hand opens the vault with it; enabled again: restore works. Then vault keys export
// --to an escrow recipient, vault keys remove of every other wrap, the passphrase
// refused, vault keys import with the escrow identity, and restore with the passphrase
// works again.
func TestCLIKMSAndEscrow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := nodetest.New(t, nodetest.Opts{})
	dir := t.TempDir()
	st, err := kmstest.NewStore(dir, "web-key")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "coffer-kms-testkms")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 %s=%s exec %s\n", kmstest.EnvPlugin, kmstest.EnvState, st.Path, exe)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// The dev client configuration, with the plugin.
	b, err := os.ReadFile(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ca", "cert", "key"} {
		if p, ok := cfg[k].(string); ok && !filepath.IsAbs(p) {
			cfg[k] = filepath.Join(filepath.Dir(node.DevClientConfig(c.Dir)), p)
		}
	}
	cfg["kms_plugins"] = map[string]string{"testkms": wrapper}
	if b, err = yaml.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "coffer.yaml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"COFFER_CONFIG": cfgPath, "COFFER_PASSPHRASE": "kms cli passphrase"}
	noPass := map[string]string{"COFFER_CONFIG": cfgPath}
	if code, _, stderr := cli(t, env, "init"); code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	src := filepath.Join(dir, "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 90})
	code, out, stderr := cli(t, env, "--json", "backup", src)
	if code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	id := lastJSON(t, out)["snapshot_id"].(string)[:8]
	keys := func(out string) vaultKeysJSON {
		t.Helper()
		var k vaultKeysJSON
		if err := json.Unmarshal([]byte(out), &k); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return k
	}
	code, out, stderr = cli(t, env, "--json", "vault", "keys", "add-kms", "--plugin", "testkms", "--key", "web-key", "--reason", "test")
	if code != exitOK {
		t.Fatalf("add-kms: exit %d: %s", code, stderr)
	}
	var wrapID string
	for _, w := range keys(out).Wraps {
		if w.Kind == "kms" && w.Holder == "web-key" && w.Params["key_version"] == "1" && w.Params["plugin"] == "testkms" {
			wrapID = w.ID
		}
	}
	if wrapID == "" {
		t.Fatalf("add-kms: no kms wrap in %s", out)
	}
	n := 0
	restore := func(env map[string]string) (int, string) {
		t.Helper()
		n++
		target := filepath.Join(dir, fmt.Sprintf("r%d", n))
		code, _, stderr := cli(t, env, "restore", id, "--target", target)
		if code == exitOK {
			nodetest.CompareTrees(t, src, filepath.Join(target, "src"))
		}
		return code, stderr
	}
	// ls opens the vault and reads the snapshot's root tree: a cheaper proof than a
	// restore that the key opened (the cluster test restores after every step).
	ls := func(env map[string]string) (int, string) {
		t.Helper()
		code, out, stderr := cli(t, env, "ls", id)
		if code == exitOK && !strings.Contains(out, "src") {
			t.Fatalf("ls %s: %s", id, out)
		}
		return code, stderr
	}
	if code, stderr := restore(noPass); code != exitOK {
		t.Fatalf("restore through the KMS: exit %d: %s", code, stderr)
	}
	code, out, stderr = cli(t, noPass, "--json", "vault", "keys", "rotate-kms", wrapID, "--reason", "yearly")
	if code != exitOK || !strings.Contains(out, `"key_version":"2"`) || !strings.Contains(out, wrapID) {
		t.Fatalf("rotate-kms: exit %d: %s %s", code, out, stderr)
	}
	if code, stderr := ls(noPass); code != exitOK {
		t.Fatalf("restore after rotate-kms: exit %d: %s", code, stderr)
	}
	if err := st.SetDisabled("web-key", true); err != nil {
		t.Fatal(err)
	}
	if code, stderr := ls(noPass); code != exitFailure || !strings.Contains(stderr, `key "web-key" version 2`) || !strings.Contains(stderr, "disabled") {
		t.Fatalf("restore with the key disabled: exit %d: %s", code, stderr)
	}
	// With the passphrase at hand the vault still opens (the KMS is one holder of several).
	if code, stderr := ls(env); code != exitOK || !strings.Contains(stderr, "opening vault") {
		t.Fatalf("restore with the key disabled and the passphrase: exit %d: %s", code, stderr)
	}
	if err := st.SetDisabled("web-key", false); err != nil {
		t.Fatal(err)
	}
	if code, stderr := restore(noPass); code != exitOK {
		t.Fatalf("restore after re-enabling: exit %d: %s", code, stderr)
	}

	// Escrow.
	escrow, err := crypt.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	idText, _ := escrow.MarshalText()
	idFile := filepath.Join(dir, "escrow-key.txt")
	if err := os.WriteFile(idFile, idText, 0o600); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "vault.escrow")
	code, out, stderr = cli(t, noPass, "--json", "vault", "keys", "export", "--to", escrow.Recipient(), "--out", bundle, "--reason", "safe")
	if code != exitOK {
		t.Fatalf("export: exit %d: %s", code, stderr)
	}
	for _, w := range keys(out).Wraps {
		if w.Recipient == escrow.Recipient() {
			continue
		}
		if code, _, stderr := cli(t, noPass, "vault", "keys", "remove", w.ID, "--reason", "escrow test"); code != exitOK {
			t.Fatalf("remove %s: exit %d: %s", w.ID, code, stderr)
		}
	}
	if code, stderr := ls(env); code != exitFailure || !strings.Contains(stderr, "no passphrase wrap") {
		t.Fatalf("restore with only the escrow wrap: exit %d: %s", code, stderr)
	}
	code, out, stderr = cli(t, noPass, "--json", "vault", "keys", "import", bundle, "--identity", idFile, "--reason", "recovery")
	var imp escrowImportJSON
	if err := json.Unmarshal([]byte(out), &imp); code != exitOK || err != nil || len(imp.Added) != 2 {
		t.Fatalf("import: exit %d: %v %s %s", code, err, out, stderr)
	}
	if code, stderr := restore(env); code != exitOK {
		t.Fatalf("restore with the passphrase after the import: exit %d: %s", code, stderr)
	}
	if code, stderr := ls(noPass); code != exitOK {
		t.Fatalf("open through the KMS after the import: exit %d: %s", code, stderr)
	}
	code, out, _ = cli(t, maps.Clone(env), "--json", "admin", "audit")
	for _, want := range []string{"vault keys add kms", "vault keys rotate-kms", "vault keys escrow export", "vault keys escrow import"} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("audit log lacks %q", want)
		}
	}
}
