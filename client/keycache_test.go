package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// TestKeyCacheOpen opens a vault twice with the key cache on: the first Open unwraps
// the vault's key and writes a 0600 entry, the second takes the key from the entry and
// backs up and restores with it. A wrong passphrase still fails, another host secret
// falls back to the vault, and once the vault's wrapping is replaced (a rotated
// passphrase) the old passphrase no longer opens it through the old entry.
func TestKeyCacheOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t)
	cfg := withKeyCache(e.cfg, dir)
	entry := keyCachePath(cfg, "v1")

	a1, err := Open(ctx, cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	if a1.keyFromCache {
		t.Fatal("first Open took the key from an empty cache")
	}
	fi, err := os.Stat(entry)
	if err != nil {
		t.Fatalf("no key cache entry after Open: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key cache entry mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(entry)); di.Mode().Perm() != 0o700 {
		t.Errorf("key cache directory mode %v, want 0700", di.Mode().Perm())
	}

	a2, err := Open(ctx, cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	if !a2.keyFromCache {
		t.Fatal("second Open did not use the key cache")
	}
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "f"), randBytes(5, 300<<10), 0o644)
	res, err := a2.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a1.Restore(ctx, res.Snapshot, RestoreOptions{Target: filepath.Join(dir, "r")}); err != nil {
		t.Fatalf("restore with the vault-unwrapped key of a backup made with the cached key: %v", err)
	}
	compareTrees(t, src, filepath.Join(dir, "r", "src"))

	if _, err := Open(ctx, cfg, "v1", []byte("wrong passphrase")); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("wrong passphrase with a key cache entry: %v", err)
	}
	other := cfg
	other.KeyCacheSecret = []byte("another host's secret")
	if a, err := Open(ctx, other, "v1", testPass); err != nil || a.keyFromCache {
		t.Errorf("Open with another host secret: err %v, from cache %v; want the vault's key", err, err == nil && a.keyFromCache)
	}
	if a, err := Open(ctx, cfg, "v1", testPass); err != nil || a.keyFromCache {
		t.Fatalf("Open after the entry was rewritten for another secret: err %v", err)
	}
	if a, err := Open(ctx, cfg, "v1", testPass); err != nil || !a.keyFromCache {
		t.Fatalf("Open with the rewritten entry: err %v", err)
	}

	// Change the passphrase: the vault's only passphrase wrap is replaced.
	ag, err := Open(ctx, cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	staleEntry, err := os.ReadFile(entry) // stands for the old passphrase wrap
	if err != nil {
		t.Fatal(err)
	}
	newPass := []byte("rotated passphrase")
	if _, err := ag.ChangePassphrase(ctx, newPass, "test"); err != nil {
		t.Fatal(err)
	}
	// ChangePassphrase caches the new wrap's key: drop it to see the stale entry go.
	if err := os.WriteFile(entry, staleEntry, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, cfg, "v1", testPass); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("old passphrase after rotation: %v, want ErrWrongPassphrase", err)
	}
	if _, err := os.Stat(entry); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale key cache entry kept: %v", err)
	}
	if a, err := Open(ctx, cfg, "v1", newPass); err != nil || a.keyFromCache {
		t.Fatalf("new passphrase after rotation: %v", err)
	}
	if a, err := Open(ctx, cfg, "v1", newPass); err != nil || !a.keyFromCache {
		t.Fatalf("new passphrase from the key cache: %v", err)
	}
}

// TestKeyCacheOff checks that without a secret or a cache directory nothing is written.
func TestKeyCacheOff(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg
	cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	for i := range 2 {
		a, err := Open(context.Background(), cfg, "v1", testPass)
		if err != nil {
			t.Fatal(err)
		}
		if a.keyFromCache {
			t.Fatalf("Open %d used a key cache without a secret", i)
		}
	}
	if _, err := os.Stat(keyCachePath(cfg, "v1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("key cache entry written without a secret: %v", err)
	}
}

// TestKeyCacheFromInit: InitVault caches the new key, so the first Open after it does
// not unwrap (derive the passphrase's key) again, and its key is the vault's.
func TestKeyCacheFromInit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t)
	cfg := withKeyCache(e.cfg, dir)
	if _, err := InitVault(ctx, cfg, "v2", testPass); err != nil {
		t.Fatal(err)
	}
	a, err := Open(ctx, cfg, "v2", testPass)
	if err != nil {
		t.Fatal(err)
	}
	if !a.keyFromCache {
		t.Fatal("Open after InitVault did not use the key cache")
	}
	noCache := e.cfg
	b, err := Open(ctx, noCache, "v2", testPass)
	if err != nil {
		t.Fatal(err)
	}
	if a.keys.GearSeed() != b.keys.GearSeed() {
		t.Fatal("the cached key differs from the vault's")
	}
	if _, err := Open(ctx, cfg, "v2", []byte("wrong passphrase")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase with a cache entry from init: %v", err)
	}
}

// TestKeyCacheRefusesPurgedVault: the key cache is bound to the vault itself, not its
// name. Once the vault is purged, Open fails and removes the entry (the master key must
// not outlive the vault's crypto-erase on an agent's disk); an entry put back for a vault
// created again under the same name, even holding the same key wrapping, is not used;
// and a soft-deleted vault neither uses nor gets an entry.
func TestKeyCacheRefusesPurgedVault(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t)
	cfg := withKeyCache(e.cfg, dir)
	entry := keyCachePath(cfg, "v1")
	if _, err := Open(ctx, cfg, "v1", testPass); err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(entry)
	if err != nil {
		t.Fatalf("no key cache entry after Open: %v", err)
	}

	// A backup fills the tree cache: the vault's file names and metadata in the clear.
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "secret-plans.txt"), []byte("x"), 0o644)
	a0, err := Open(ctx, cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a0.Backup(ctx, BackupOptions{Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	a0.Close()
	vaultDir := filepath.Dir(entry)
	if packs, _ := filepath.Glob(filepath.Join(vaultDir, "sets", "*")); len(packs) == 0 {
		t.Fatalf("no tree pack under %s after a backup", vaultDir)
	}

	// Purge: the vault record with its wrappings is gone from meta.
	old, _ := e.meta.PurgeVault("v1")
	if _, err := Open(ctx, cfg, "v1", testPass); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("Open of a purged vault: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(entry); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the purged vault's key cache entry survives Open: %v", err)
	}
	if _, err := os.Stat(vaultDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the purged vault's tree cache survives Open: %v", err)
	}

	// The same name again, even with the very same wrapping: another vault.
	again := old
	again.Created = e.meta.now()
	e.meta.SetVault(again)
	if err := os.MkdirAll(vaultDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(entry, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := Open(ctx, cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	if a.keyFromCache {
		t.Fatal("a vault created again under the purged vault's name opened the old cache entry")
	}

	// Soft-deleted: the entry is dropped and not rewritten.
	again.Deleted = &meta.VaultDeletion{At: e.meta.now(), RecoverUntil: e.meta.now().Add(time.Hour), By: "ops"}
	e.meta.SetVault(again)
	if a, err := Open(ctx, cfg, "v1", testPass); err != nil || a.keyFromCache {
		t.Fatalf("Open of a soft-deleted vault: %v (from cache %v), want the vault's key", err, err == nil && a.keyFromCache)
	}
	if _, err := os.Stat(entry); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a soft-deleted vault keeps a key cache entry: %v", err)
	}
}

// withKeyCache returns cfg with the local key cache on, under dir/cache.
func withKeyCache(cfg Config, dir string) Config {
	cfg.CacheDir = filepath.Join(dir, "cache")
	cfg.KeyCacheSecret = []byte("host-local secret")
	return cfg
}
