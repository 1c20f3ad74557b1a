package client

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/memmeta"
	"github.com/cofferhq/coffer/placement"
)

// TestKeyRotationKeepsSnapshots: back up, rotate, back up, rotate, back up, change the
// passphrase: all three snapshots restore with the new passphrase only; each backup
// sealed under the epoch of its time; dedup is kept across epochs.
func TestKeyRotationKeepsSnapshots(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	dir := t.TempDir()
	var snaps []meta.Snapshot
	var srcs []string
	for i := range 3 {
		src := filepath.Join(dir, "src", string(rune('a'+i)))
		writeFile(t, filepath.Join(src, "shared"), randBytes(1, 200<<10), 0o644)
		writeFile(t, filepath.Join(src, "own"), randBytes(uint64(10+i), 100<<10), 0o644)
		a := e.open(t)
		if a.KeyEpoch() != uint32(i) {
			t.Fatalf("backup %d sealed under epoch %d", i, a.KeyEpoch())
		}
		res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
		if err != nil {
			t.Fatal(err)
		}
		snaps, srcs = append(snaps, res.Snapshot), append(srcs, src)
		if i < 2 {
			v, err := a.RotateKey(ctx, "test")
			if err != nil || v.Keys.Epoch != uint32(i+1) {
				t.Fatalf("rotate: %v", err)
			}
		}
	}
	newPass := []byte("the new passphrase")
	if _, err := e.open(t).ChangePassphrase(ctx, newPass, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, e.cfg, "v1", testPass); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("old passphrase after the change: %v", err)
	}
	a, err := Open(ctx, e.cfg, "v1", newPass)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range snaps {
		target := filepath.Join(dir, "r", s.ID.Str())
		if _, err := a.Restore(ctx, s, RestoreOptions{Target: target}); err != nil {
			t.Fatalf("restore snapshot %d: %v", i, err)
		}
		compareTrees(t, srcs[i], filepath.Join(target, filepath.Base(srcs[i])))
	}
	log, err := e.meta.AuditLog(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, l := range log {
		if l.Vault == "v1" && l.Outcome == meta.AuditOK && len(l.Action) > 10 && l.Action[:10] == "vault keys" {
			seen = append(seen, l.Action)
		}
	}
	if len(seen) != 3 || seen[0] != "vault keys rotate-key" || seen[2] != "vault keys passphrase change" {
		t.Fatalf("audit log of key changes: %q", seen)
	}
}

// TestHostWrapAndRemoval: a host opens the vault with its own key and no passphrase;
// once its wrap is removed (with the rotation that comes with it), the keyring it kept
// does not open a chunk written afterwards.
func TestHostWrapAndRemoval(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	host, err := crypt.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	admin := e.open(t)
	v, err := admin.AddHostWrap(ctx, "web01", host.Recipient(), "")
	if err != nil {
		t.Fatal(err)
	}
	var wid string
	for _, w := range v.Keys.Wraps {
		if w.Kind == meta.WrapHost {
			wid = w.ID
		}
	}
	ha, err := OpenWith(ctx, e.cfg, "v1", Unlock{Identity: host})
	if err != nil {
		t.Fatalf("host unlock: %v", err)
	}
	v, err = admin.RemoveWrap(ctx, wid, "host retired")
	if err != nil || v.Keys.Epoch != 1 {
		t.Fatalf("remove host wrap: %v", err)
	}
	if _, err := OpenWith(ctx, e.cfg, "v1", Unlock{Identity: host}); !errors.Is(err, ErrNoWrap) {
		t.Fatalf("removed host unlock: %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "secret"), randBytes(77, 50<<10), 0o644)
	res, err := e.open(t).Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	// The host still holds its old keyring (ha): the new tree is sealed under epoch 1.
	if _, err := ha.Restore(ctx, res.Snapshot, RestoreOptions{Target: filepath.Join(dir, "r")}); !errors.Is(err, crypt.ErrNoEpochKey) {
		t.Fatalf("removed host restoring a later snapshot: %v", err)
	}
}

// TestPlatformManagement: a platform-managed vault opens through the platform key with
// no passphrase; switching to customer removes the platform wrap and rotates, after
// which the platform cannot unwrap; switching back needs the keyring.
func TestPlatformManagement(t *testing.T) {
	ctx := context.Background()
	pk, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	chunks := memstore.NewChunks()
	m := placement.Map{Epoch: 1, PGCount: 1, Profile: placement.DefaultProfile}
	svc, err := memmeta.New(memmeta.Config{Chunks: chunks, Map: &m, Now: time.Now, PlatformKey: pk})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Meta: svc, Chunks: chunks, Host: "h", Now: time.Now, Argon2: crypt.TestArgon2Params()}
	if _, err := InitVaultWith(ctx, cfg, "p", InitOptions{Passphrase: testPass, Management: "bogus"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad management: %v", err)
	}
	v, err := InitVaultWith(ctx, cfg, "p", InitOptions{Passphrase: testPass, Management: meta.KeyPlatform})
	if err != nil || v.Keys.Management != meta.KeyPlatform || len(v.Keys.Wraps) != 2 {
		t.Fatalf("init platform: %v", err)
	}
	a, err := OpenWith(ctx, cfg, "p", Unlock{Platform: true})
	if err != nil {
		t.Fatalf("platform unlock: %v", err)
	}
	agentCtx := meta.WithPrincipal(ctx, meta.Principal{Name: "h", Role: meta.RoleBackupAgent})
	if _, err := OpenWith(agentCtx, cfg, "p", Unlock{Platform: true}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("platform unlock by an agent: %v", err)
	}
	if _, err := a.SetManagement(agentCtx, meta.KeyCustomer, ""); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("switch by an agent: %v", err)
	}
	v, err = a.SetManagement(ctx, meta.KeyCustomer, "tenant asked")
	if err != nil || v.Keys.Management != meta.KeyCustomer || v.Keys.Epoch != 1 || len(v.Keys.Wraps) != 1 {
		t.Fatalf("switch to customer: %v %+v", err, v.Keys)
	}
	if _, err := OpenWith(ctx, cfg, "p", Unlock{Platform: true}); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("platform unlock of a customer vault: %v", err)
	}
	if _, err := InitVaultWith(ctx, cfg, "c", InitOptions{Passphrase: testPass}); err != nil {
		t.Fatal(err)
	}
	got, err := svc.GetVault(ctx, "c")
	if err != nil || got.Keys.Management != meta.KeyCustomer || len(got.Keys.Wraps) != 1 || got.Keys.Wraps[0].Kind != meta.WrapPassphrase {
		t.Fatalf("customer vault: %v", err)
	}
	// Back to platform: only with the keyring (an opened agent).
	a, err = Open(ctx, cfg, "p", testPass)
	if err != nil {
		t.Fatal(err)
	}
	if v, err = a.SetManagement(ctx, meta.KeyPlatform, ""); err != nil || v.Keys.Management != meta.KeyPlatform {
		t.Fatalf("switch back: %v", err)
	}
	if _, err := OpenWith(ctx, cfg, "p", Unlock{Platform: true}); err != nil {
		t.Fatalf("platform unlock after switching back: %v", err)
	}
}

// TestLegacyVaultConversion: a vault made before key wraps (one passphrase wrapping of
// the master key) still opens and backs up; rotation asks for the conversion first; a
// passphrase change converts it, after which it rotates, and the snapshot made under the
// legacy wrapping restores with the new passphrase.
func TestLegacyVaultConversion(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	mk, err := crypt.NewMasterKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w, err := crypt.WrapKey(mk, testPass, crypt.TestArgon2Params(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.meta.GetVault(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	v.ID, v.Keys, v.KeyWraps = "old", nil, [][]byte{w}
	e.meta.SetVault(v)
	a, err := Open(ctx, e.cfg, "old", testPass)
	if err != nil {
		t.Fatalf("legacy open: %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "f"), randBytes(3, 80<<10), 0o644)
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RotateKey(ctx, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rotating a legacy vault: %v, want a request to convert first", err)
	}
	newPass := []byte("converted")
	if v, err = a.ChangePassphrase(ctx, newPass, "convert"); err != nil || v.Keys == nil || len(v.KeyWraps) != 0 {
		t.Fatalf("conversion: %v", err)
	}
	if _, err := Open(ctx, e.cfg, "old", testPass); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("old passphrase after conversion: %v", err)
	}
	b, err := Open(ctx, e.cfg, "old", newPass)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.RotateKey(ctx, ""); err != nil {
		t.Fatalf("rotate after conversion: %v", err)
	}
	c, err := Open(ctx, e.cfg, "old", newPass)
	if err != nil || c.KeyEpoch() != 1 {
		t.Fatalf("reopen: epoch %d, %v", c.KeyEpoch(), err)
	}
	if _, err := c.Restore(ctx, res.Snapshot, RestoreOptions{Target: filepath.Join(dir, "r")}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(dir, "r", "src"))
}
