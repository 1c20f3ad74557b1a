package node_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// keyringOf unwraps vault v's keyring with passphrase pass, as a holder would (the test
// needs the key bytes to look for them).
func keyringOf(t *testing.T, v meta.Vault, pass []byte) *crypt.Keyring {
	t.Helper()
	for _, w := range v.Keys.Wraps {
		if w.Kind != meta.WrapPassphrase {
			continue
		}
		id, _, err := crypt.OpenIdentity(w.Identity, pass)
		if err != nil {
			continue
		}
		kr, err := crypt.OpenKeyring(w.Keyring, string(v.ID), id)
		if err != nil {
			t.Fatal(err)
		}
		return kr
	}
	t.Fatalf("no passphrase wrap of vault %s opens", v.ID)
	return nil
}

// TestKeyRotationPlatformAndCustomer is the cluster-level acceptance of key rotation and
// key management, over real loopback QUIC:
//   - back up, rotate-key, back up, rotate-key, back up, change the passphrase: all three
//     snapshots restore bit-identical with the new passphrase only; the old one is
//     refused; every change is in the audit log;
//   - a platform-managed vault restores through the platform key with an admin's
//     certificate and no passphrase; an agent cannot ask for that;
//   - the customer-managed vault has no platform wrap, and nothing in any meta server's
//     data directory (raw key bytes, or any age identity found there, or the platform
//     key itself) unwraps it.
func TestKeyRotationPlatformAndCustomer(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{})
	cfg := c.Connect(t)
	ctx := ctxT(t, 5*time.Minute)
	if _, err := client.InitVault(ctx, cfg, "cust", passphrase); err != nil {
		t.Fatal(err)
	}
	var snaps []meta.Snapshot
	var srcs []string
	for i := range 3 {
		src := filepath.Join(t.TempDir(), "src")
		nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: uint64(40 + i)})
		a, err := client.Open(ctx, cfg, "cust", passphrase)
		if err != nil {
			t.Fatal(err)
		}
		if a.KeyEpoch() != uint32(i) {
			t.Fatalf("backup %d seals under epoch %d", i, a.KeyEpoch())
		}
		snaps, srcs = append(snaps, backup(t, a, src)), append(srcs, src)
		if i < 2 {
			if _, err := a.RotateKey(ctx, "acceptance"); err != nil {
				t.Fatalf("rotate-key: %v", err)
			}
		}
		a.Close()
	}
	a, err := client.Open(ctx, cfg, "cust", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	newPass := []byte("a new passphrase for the acceptance test")
	if _, err := a.ChangePassphrase(ctx, newPass, "acceptance"); err != nil {
		t.Fatalf("passphrase change: %v", err)
	}
	a.Close()
	if _, err := client.Open(ctx, cfg, "cust", passphrase); !errors.Is(err, client.ErrWrongPassphrase) {
		t.Fatalf("old passphrase after the change: %v", err)
	}
	a, err = client.Open(ctx, cfg, "cust", newPass)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range snaps {
		t.Logf("snapshot %d", i)
		restoreAndCompare(t, a, s, srcs[i])
	}
	a.Close()
	es, err := cfg.Meta.(meta.RetentionService).AuditLog(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range es {
		if e.Vault == "cust" && e.Outcome == meta.AuditOK && len(e.Action) > len("vault keys") && e.Action[:len("vault keys")] == "vault keys" {
			actions = append(actions, e.Action)
		}
	}
	if want := []string{"vault keys rotate-key", "vault keys rotate-key", "vault keys passphrase change"}; !slicesEqual(actions, want) {
		t.Fatalf("audited key changes %q, want %q", actions, want)
	}

	// Platform-managed: restore with an admin certificate and no passphrase.
	if _, err := client.InitVaultWith(ctx, cfg, "plat", client.InitOptions{Passphrase: passphrase, Management: meta.KeyPlatform}); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 50})
	pa, err := client.Open(ctx, cfg, "plat", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	psnap := backup(t, pa, src)
	pa.Close()
	pa, err = client.OpenWith(ctx, cfg, "plat", client.Unlock{Platform: true})
	if err != nil {
		t.Fatalf("platform unlock by an admin: %v", err)
	}
	restoreAndCompare(t, pa, psnap, src)
	pa.Close()
	agentCfg := nodetest.ConnectWith(t, identityFor(t, c, pki.IssueRequest{CommonName: "web01", Role: transport.RoleAgent, Vaults: []string{"plat"}}),
		metaAddrs(t, c), c.ChunkAddrs())
	if _, err := client.OpenWith(ctx, agentCfg, "plat", client.Unlock{Platform: true}); transport.CodeOf(err) != transport.PermissionDenied && !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("platform unlock by an agent: %v", err)
	}
	if _, err := client.OpenWith(ctx, cfg, "cust", client.Unlock{Platform: true}); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("platform unlock of a customer-managed vault: %v", err)
	}

	// The customer-managed vault: no platform wrap, and nothing on the meta servers'
	// disks opens it.
	v, err := cfg.Meta.GetVault(ctx, "cust")
	if err != nil {
		t.Fatal(err)
	}
	if v.Keys.Management != meta.KeyCustomer {
		t.Fatalf("management %q", v.Keys.Management)
	}
	for _, w := range v.Keys.Wraps {
		if w.Kind == meta.WrapPlatform {
			t.Fatalf("customer-managed vault holds platform wrap %s", w.ID)
		}
	}
	kr := keyringOf(t, v, newPass)
	secrets := [][]byte{kr.Master[:]}
	for _, e := range kr.Epochs {
		secrets = append(secrets, e.Key[:])
	}
	ageKey := regexp.MustCompile(`AGE-SECRET-KEY-1[0-9A-Z]{58}`)
	var candidates [][]byte
	pk, err := os.ReadFile(filepath.Join(c.Dir, "pki", "platform-key.txt"))
	if err != nil {
		t.Fatal(err)
	}
	candidates = append(candidates, pk)
	scanned := 0
	for _, n := range c.Nodes {
		if n.Meta() == nil {
			continue
		}
		err := filepath.WalkDir(c.DataDir(n.ID()), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			scanned += len(b)
			for _, s := range secrets {
				if bytes.Contains(b, s) {
					t.Errorf("%s holds a key of vault cust in the clear", p)
				}
			}
			candidates = append(candidates, ageKey.FindAll(b, -1)...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if scanned == 0 {
		t.Fatal("no meta data scanned")
	}
	for _, cand := range candidates {
		id, err := crypt.ParseIdentity(cand)
		if err != nil {
			continue
		}
		for _, w := range v.Keys.Wraps {
			if _, err := crypt.OpenKeyring(w.Keyring, "cust", id); err == nil {
				t.Fatalf("a key found on a meta server opens wrap %s of the customer-managed vault", w.ID)
			}
		}
	}
	t.Logf("scanned %d bytes of meta data directories, tried %d candidate keys", scanned, len(candidates))
}

func metaAddrs(t *testing.T, c *nodetest.Cluster) []string {
	t.Helper()
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	return f.Meta
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRevokedHostCannotReadNewEpoch: a host opens its vault with its own key (no
// passphrase) and backs up. An admin revokes its certificate: the cluster removes its
// wrap and a rotation becomes due, which the next writer performs. The host, with its
// access reinstated by the test (it reads through an admin's connection, as if its
// certificate were valid again) and the keyring it held, cannot decrypt the snapshot
// written after the revocation, and its own key opens no wrap any more; it still reads
// what was written before (docs/security.md says so).
func TestRevokedHostCannotReadNewEpoch(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{})
	admin := c.Connect(t)
	ctx := ctxT(t, 5*time.Minute)
	if _, err := client.InitVault(ctx, admin, "web", passphrase); err != nil {
		t.Fatal(err)
	}
	hostCfg := nodetest.ConnectWith(t, identityFor(t, c, pki.IssueRequest{CommonName: "web01", Role: transport.RoleAgent, Vaults: []string{"web"}}),
		metaAddrs(t, c), c.ChunkAddrs())
	hostKey, err := crypt.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	// Once, with the passphrase: the host adds its own wrap.
	first, err := client.OpenWith(ctx, hostCfg, "web", client.Unlock{Passphrase: passphrase, Identity: hostKey})
	if err != nil {
		t.Fatal(err)
	}
	v, err := first.AddHostWrap(ctx, "web01", hostKey.Recipient(), "enrolled")
	if err != nil {
		t.Fatalf("host adds its own wrap: %v", err)
	}
	// Attack: a backup agent may add wraps and rotate, never remove another holder's
	// wrap (it would lock the others out); refused by the cluster and audited.
	for _, w := range v.Keys.Wraps {
		if w.Kind == meta.WrapPassphrase {
			if _, err := first.RemoveWrap(ctx, w.ID, "lock them out"); !errors.Is(err, meta.ErrDenied) {
				t.Fatalf("agent removing the passphrase wrap: %v, want ErrDenied", err)
			}
		}
	}
	first.Close()
	host, err := client.OpenWith(ctx, hostCfg, "web", client.Unlock{Identity: hostKey})
	if err != nil {
		t.Fatalf("host unlock with its own key: %v", err)
	}
	defer host.Close()
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 60})
	before := backup(t, host, src)

	rev, err := admin.Meta.(meta.EnrollService).RevokeCert(ctx, meta.Revocation{Principal: "web01", Reason: "host stolen"})
	if err != nil {
		t.Fatal(err)
	}
	waitRevocation(t, c, rev.Seq)
	if _, err := client.OpenWith(ctx, hostCfg, "web", client.Unlock{Identity: hostKey}); err == nil {
		t.Fatal("revoked host still opens its vault")
	}
	v, err = admin.Meta.GetVault(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range v.Keys.Wraps {
		if w.Kind == meta.WrapHost {
			t.Fatalf("host wrap %s (%s) survived the revocation", w.ID, w.Holder)
		}
	}
	if v.Keys.RotateBy != 1 || v.Keys.Epoch != 0 {
		t.Fatalf("after revocation: epoch %d, rotate by %d; want a rotation to 1 due", v.Keys.Epoch, v.Keys.RotateBy)
	}
	writer, err := client.Open(ctx, admin, "web", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	if writer.KeyEpoch() != 1 {
		t.Fatalf("the first writer after the revocation seals under epoch %d, want 1", writer.KeyEpoch())
	}
	secret := filepath.Join(t.TempDir(), "secret")
	nodetest.MakeTree(t, secret, nodetest.TreeOpts{Seed: 61})
	after := backup(t, writer, secret)
	writer.Close()

	// Reinstated: the host's requests are served again (an admin's connection), with
	// the keyring it held before the revocation.
	reinstated := host.WithChunks(admin.Chunks)
	defer reinstated.Close()
	if _, err := reinstated.Restore(ctx, after, client.RestoreOptions{Target: filepath.Join(t.TempDir(), "r")}); !errors.Is(err, crypt.ErrNoEpochKey) {
		t.Fatalf("revoked host restoring a snapshot written after its revocation: %v, want ErrNoEpochKey", err)
	}
	if _, err := client.OpenWith(ctx, admin, "web", client.Unlock{Identity: hostKey}); !errors.Is(err, client.ErrNoWrap) {
		t.Fatalf("revoked host's key against the vault's current wraps: %v, want ErrNoWrap", err)
	}
	restoreAndCompare(t, reinstated, before, src)
	waitAudit(t, admin.Meta.(meta.RetentionService), func(es []meta.AuditEntry) string {
		var revoked, refused bool
		for _, e := range es {
			revoked = revoked || e.Action == "cert revoke" && bytes.Contains([]byte(e.Target), []byte("host key wraps removed from vault web"))
			refused = refused || e.Action == "vault keys remove wrap" && e.Outcome == meta.AuditRefused && e.Principal == "web01"
		}
		switch {
		case !revoked:
			return "no revocation entry naming the removed host wrap"
		case !refused:
			return "no refused wrap removal by web01"
		}
		return ""
	})
}
