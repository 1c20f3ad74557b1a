package node_test

import (
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/kms"
	"github.com/cofferhq/coffer/client/kms/kmstest"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node/nodetest"
)

// TestMain runs the fake KMS plugin when this test binary is executed as one (the KMS
// tests point the agent's plugin resolver at the binary itself).
func TestMain(m *testing.M) {
	if os.Getenv(kmstest.EnvPlugin) == "1" {
		os.Exit(kmstest.PluginMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// kmsBackend is a KMS as the cluster test drives it: the agent's resolver, the plugin
// name and key a wrap records, and the KMS administrator's disable and enable of the key
// version a wrap uses.
type kmsBackend struct {
	resolver        *kms.Resolver
	plugin, key     string
	disable, enable func(t *testing.T, version string)
	calls           func() int // unwraps the KMS answered
}

// pluginKMS is the fake plugin (this test binary re-executed) with its state file.
func pluginKMS(t *testing.T) kmsBackend {
	st, err := kmstest.NewStore(t.TempDir(), "coffer-vault-key")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return kmsBackend{
		resolver: &kms.Resolver{Plugins: map[string]string{"testkms": exe},
			Env: append(os.Environ(), kmstest.EnvPlugin+"=1", kmstest.EnvState+"="+st.Path)},
		plugin: "testkms", key: "coffer-vault-key",
		disable: func(t *testing.T, _ string) {
			if err := st.SetDisabled("coffer-vault-key", true); err != nil {
				t.Fatal(err)
			}
		},
		enable: func(t *testing.T, _ string) {
			if err := st.SetDisabled("coffer-vault-key", false); err != nil {
				t.Fatal(err)
			}
		},
		calls: func() int { return st.Calls(kms.OpUnwrap) },
	}
}

// transitKMS is the built-in Vault Transit client against a fake Transit server. Vault
// cannot switch a Transit key off; its operator disables a version by rotating past it
// and raising min_decryption_version above it, and enables it by lowering that again.
func transitKMS(t *testing.T) kmsBackend {
	ft, err := kmstest.NewTransit("s.cluster-test", "coffer-vault-key")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ft)
	t.Cleanup(srv.Close)
	admin := func(t *testing.T, path string, data map[string]any) {
		vc := vault.DefaultConfig()
		vc.Address = srv.URL
		c, err := vault.NewClient(vc)
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken("s.cluster-test")
		if _, err := c.Logical().Write(path, data); err != nil {
			t.Fatalf("transit admin %s: %v", path, err)
		}
	}
	version := func(t *testing.T, v string) int {
		n := 0
		for _, c := range v {
			n = n*10 + int(c-'0')
		}
		return n
	}
	return kmsBackend{
		resolver: &kms.Resolver{Transit: kms.TransitConfig{Address: srv.URL, Token: "s.cluster-test"}},
		plugin:   kms.TransitPlugin, key: "coffer-vault-key",
		disable: func(t *testing.T, v string) {
			admin(t, "transit/keys/coffer-vault-key/rotate", nil)
			admin(t, "transit/keys/coffer-vault-key/config", map[string]any{"min_decryption_version": version(t, v) + 1})
		},
		enable: func(t *testing.T, v string) {
			admin(t, "transit/keys/coffer-vault-key/config", map[string]any{"min_decryption_version": version(t, v)})
		},
		calls: func() int { return ft.Calls("decrypt") },
	}
}

func kmsWrapOf(t *testing.T, v meta.Vault) meta.KeyWrap {
	t.Helper()
	for _, w := range v.Keys.Wraps {
		if w.Kind == meta.WrapKMS {
			return w
		}
	}
	t.Fatalf("vault %s has no kms wrap", v.ID)
	return meta.KeyWrap{}
}

// TestKMSWrapsAndEscrow is the cluster-level acceptance of external KMS keys and key
// escrow (issue 17 step 5), over real loopback QUIC. For the KMS plugin protocol (a
// plugin executable: this test binary) and for the built-in Vault Transit client (a fake
// Transit server), with a restore after each step:
//   - wrap: the vault key is wrapped under the KMS key (version 1); the vault opens
//     through the KMS alone (no passphrase) and restores bit-identical;
//   - version rotation: rotate-kms makes version 2 and re-wraps (same wrap ID); the
//     snapshot from before the rotation and one after both restore through the KMS;
//   - disable: the open fails with kms.ErrKeyDisabled and a message naming the key;
//   - re-enable: the open and restore work again;
//   - the changes are audited, the rotation with both versions.
//
// Escrow: export the wraps to an escrow recipient, rotate the data key, remove every wrap
// but the escrow recipient's: neither the passphrase nor the KMS opens the vault; coffer
// vault keys import (client.ImportEscrow) with the escrow identity puts the wraps back
// and both snapshots restore with the passphrase and through the KMS.
func TestKMSWrapsAndEscrow(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{})
	cfg := c.Connect(t)
	for _, tc := range []struct {
		name string
		be   func(t *testing.T) kmsBackend
	}{{"plugin", pluginKMS}, {"vault-transit", transitKMS}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t, 5*time.Minute)
			be := tc.be(t)
			vid := meta.VaultID("kms-" + tc.name)
			if _, err := client.InitVault(ctx, cfg, vid, passphrase); err != nil {
				t.Fatal(err)
			}
			src0 := filepath.Join(t.TempDir(), "src")
			nodetest.MakeTree(t, src0, nodetest.TreeOpts{Seed: 60})
			a, err := client.Open(ctx, cfg, vid, passphrase)
			if err != nil {
				t.Fatal(err)
			}
			snap0 := backup(t, a, src0)
			kc, err := be.resolver.Client(be.plugin)
			if err != nil {
				t.Fatal(err)
			}
			v, err := a.AddKMSWrap(ctx, kc, be.plugin, be.key, "acceptance")
			if err != nil {
				t.Fatalf("add kms wrap: %v", err)
			}
			a.Close()
			w := kmsWrapOf(t, v)
			if w.Holder != be.key || w.Params[meta.ParamKeyVersion] != "1" || w.Params[meta.ParamPlugin] != be.plugin {
				t.Fatalf("kms wrap %+v", w)
			}

			openKMS := func() (*client.Agent, error) {
				return client.OpenWith(ctx, cfg, vid, client.Unlock{KMS: be.resolver})
			}
			// Unwrap: the KMS alone opens the vault.
			before := be.calls()
			a, err = openKMS()
			if err != nil {
				t.Fatalf("open through the KMS: %v", err)
			}
			if be.calls() <= before {
				t.Fatal("the vault opened without asking the KMS")
			}
			restoreAndCompare(t, a, snap0, src0)

			// Version rotation: re-wrap under version 2; old and new recovery points restore.
			v, err = a.RotateKMS(ctx, kc, w.ID, true, "acceptance")
			if err != nil {
				t.Fatalf("rotate-kms: %v", err)
			}
			w2 := kmsWrapOf(t, v)
			if w2.ID != w.ID || w2.Params[meta.ParamKeyVersion] != "2" || w2.Recipient == w.Recipient {
				t.Fatalf("after rotate-kms: %+v (was %+v)", w2, w)
			}
			src1 := filepath.Join(t.TempDir(), "src")
			nodetest.MakeTree(t, src1, nodetest.TreeOpts{Seed: 61})
			snap1 := backup(t, a, src1)
			a.Close()
			a, err = openKMS()
			if err != nil {
				t.Fatalf("open through the KMS after the rotation: %v", err)
			}
			restoreAndCompare(t, a, snap0, src0)
			restoreAndCompare(t, a, snap1, src1)
			a.Close()

			// Disable: the open fails, naming the key.
			be.disable(t, "2")
			_, err = openKMS()
			if !errors.Is(err, kms.ErrKeyDisabled) || !strings.Contains(err.Error(), `"`+be.key+`"`) || !strings.Contains(err.Error(), "version 2") {
				t.Fatalf("open with the KMS key disabled: %v", err)
			}
			t.Logf("disabled: %v", err)
			// The passphrase still opens the vault (the KMS wrap is one holder of several).
			if a, err := client.OpenWith(ctx, cfg, vid, client.Unlock{KMS: be.resolver, Passphrase: passphrase}); err != nil {
				t.Fatalf("passphrase with the KMS key disabled: %v", err)
			} else {
				a.Close()
			}

			// Re-enable: the KMS opens the vault again.
			be.enable(t, "2")
			a, err = openKMS()
			if err != nil {
				t.Fatalf("open after re-enabling the key: %v", err)
			}
			restoreAndCompare(t, a, snap1, src1)
			a.Close()

			es, err := cfg.Meta.(meta.RetentionService).AuditLog(ctx, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range es {
				if e.Vault == vid && e.Outcome == meta.AuditOK && strings.HasPrefix(e.Action, "vault keys") {
					got = append(got, e.Action+": "+e.Target)
				}
			}
			if len(got) != 2 || !strings.Contains(got[0], "vault keys add kms") || !strings.Contains(got[1], "vault keys rotate-kms") ||
				!strings.Contains(got[1], "version 1→2") {
				t.Fatalf("audited key changes: %q", got)
			}
		})
	}

	t.Run("escrow", func(t *testing.T) {
		ctx := ctxT(t, 5*time.Minute)
		be := pluginKMS(t)
		const vid = meta.VaultID("escrow")
		if _, err := client.InitVault(ctx, cfg, vid, passphrase); err != nil {
			t.Fatal(err)
		}
		a, err := client.Open(ctx, cfg, vid, passphrase)
		if err != nil {
			t.Fatal(err)
		}
		src0 := filepath.Join(t.TempDir(), "src")
		nodetest.MakeTree(t, src0, nodetest.TreeOpts{Seed: 70})
		snap0 := backup(t, a, src0)
		kc, err := be.resolver.Client(be.plugin)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.AddKMSWrap(ctx, kc, be.plugin, be.key, "acceptance"); err != nil {
			t.Fatal(err)
		}
		escrowID, err := crypt.NewIdentity()
		if err != nil {
			t.Fatal(err)
		}
		bundle, v, err := a.ExportEscrow(ctx, escrowID.Recipient(), "offline-safe", "acceptance")
		if err != nil {
			t.Fatalf("escrow export: %v", err)
		}
		a.Close()
		// A key epoch started after the export: the escrow wrap in the vault gets it too.
		a, err = client.Open(ctx, cfg, vid, passphrase)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.RotateKey(ctx, "after the export"); err != nil {
			t.Fatal(err)
		}
		a.Close()
		a, err = client.Open(ctx, cfg, vid, passphrase)
		if err != nil {
			t.Fatal(err)
		}
		src1 := filepath.Join(t.TempDir(), "src")
		nodetest.MakeTree(t, src1, nodetest.TreeOpts{Seed: 71})
		snap1 := backup(t, a, src1)
		// Delete every wrap except the escrow recipient's.
		v, err = cfg.Meta.GetVault(ctx, vid)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range v.Keys.Wraps {
			if w.Recipient == escrowID.Recipient() {
				if w.Kind != meta.WrapEscrow || w.Holder != "offline-safe" {
					t.Fatalf("escrow wrap %+v", w)
				}
				continue
			}
			if _, err := a.RemoveWrap(ctx, w.ID, "escrow acceptance"); err != nil {
				t.Fatalf("remove %s wrap %s: %v", w.Kind, w.ID, err)
			}
		}
		a.Close()
		v, err = cfg.Meta.GetVault(ctx, vid)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Keys.Wraps) != 1 {
			t.Fatalf("wraps left: %+v", v.Keys.Wraps)
		}
		if _, err := client.Open(ctx, cfg, vid, passphrase); !errors.Is(err, client.ErrNoWrap) {
			t.Fatalf("passphrase open with only the escrow wrap left: %v", err)
		}
		if _, err := client.OpenWith(ctx, cfg, vid, client.Unlock{KMS: be.resolver}); !errors.Is(err, client.ErrNoWrap) {
			t.Fatalf("KMS open with only the escrow wrap left: %v", err)
		}

		// Bad imports change nothing.
		other, _ := crypt.NewIdentity()
		if _, err := client.ImportEscrow(ctx, cfg, vid, bundle, other, "wrong key"); !errors.Is(err, crypt.ErrWrongKey) {
			t.Fatalf("import with another identity: %v", err)
		}
		if _, err := client.ImportEscrow(ctx, cfg, "kms-plugin", bundle, escrowID, "wrong vault"); !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("import into another vault: %v", err)
		}
		damaged := append([]byte(nil), bundle...)
		damaged[len(damaged)-5] ^= 1
		if _, err := client.ImportEscrow(ctx, cfg, vid, damaged, escrowID, "damaged"); !errors.Is(err, crypt.ErrInvalid) {
			t.Fatalf("import of a damaged bundle: %v", err)
		}

		res, err := client.ImportEscrow(ctx, cfg, vid, bundle, escrowID, "recovery")
		if err != nil {
			t.Fatalf("escrow import: %v", err)
		}
		t.Logf("import: added %q, skipped %q", res.Added, res.Skipped)
		if len(res.Added) != 2 {
			t.Fatalf("import added %q", res.Added)
		}
		// Both snapshots restore with the passphrase; the KMS and the escrow identity
		// open the vault too (through the KMS, the snapshot sealed under the epoch
		// started after the export restores).
		for i, u := range []client.Unlock{{Passphrase: passphrase}, {KMS: be.resolver}, {Identity: escrowID}} {
			a, err := client.OpenWith(ctx, cfg, vid, u)
			if err != nil {
				t.Fatalf("open %d after the import: %v", i, err)
			}
			switch i {
			case 0:
				restoreAndCompare(t, a, snap0, src0)
				restoreAndCompare(t, a, snap1, src1)
			case 1:
				restoreAndCompare(t, a, snap1, src1)
			}
			a.Close()
		}
		es, err := cfg.Meta.(meta.RetentionService).AuditLog(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, e := range es {
			if e.Vault == vid && e.Outcome == meta.AuditOK && strings.HasPrefix(e.Action, "vault keys escrow") {
				actions = append(actions, e.Action)
			}
		}
		if !slicesEqual(actions, []string{"vault keys escrow export", "vault keys escrow import"}) {
			t.Fatalf("audited escrow changes %q", actions)
		}
	})
}
