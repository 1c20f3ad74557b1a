package client

import (
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta"
)

// The local key cache keeps one entry per vault at <CacheDir>/<vault hex>/key (mode
// 0600 in a 0700 directory): the vault's master key sealed under the passphrase and a
// host-local secret (crypt.SealKeyCache; the security argument is in
// docs/benchmarks.md, "Key derivation"). Open tries it first and falls back to the
// vault's own key wrappings, which it then caches. An entry that does not open, or that
// stands for a wrapping the vault no longer holds, is never an error: it is removed or
// replaced. Failing to read or write the cache is logged and otherwise ignored.
//
// An entry is bound to the vault's identity, not only its name: its associated data
// names the vault ID and the cluster time the vault was created (cacheIdentity), and it
// stands for one of the vault's key wrappings. A vault that no longer exists (purged) or
// is soft-deleted has its entry removed by Open and gets no new one, so a purge also
// erases the master key from every agent that opens the vault again; a vault created
// later under the same name opens no old entry.

func keyCachePath(cfg Config, vault meta.VaultID) string {
	return filepath.Join(cfg.CacheDir, hex.EncodeToString([]byte(vault)), "key")
}

// cacheIdentity is the vault identity an entry is sealed to: its ID and creation time.
func cacheIdentity(v meta.Vault) string {
	return string(v.ID) + "\x00created " + v.Created.UTC().Format(time.RFC3339Nano)
}

// dropKeyCache removes vault's entry, if any, because the vault is gone or deleted.
func dropKeyCache(cfg Config, vault meta.VaultID, why string) {
	if cfg.CacheDir == "" {
		return
	}
	p := keyCachePath(cfg, vault)
	err := os.Remove(p)
	switch {
	case err == nil:
		cfg.Logger.Info("local key cache entry removed", "vault", vault, "reason", why)
	case !errors.Is(err, fs.ErrNotExist):
		cfg.Logger.Warn("local key cache entry not removed", "file", p, "reason", why, "err", err)
	}
}

// dropVaultCache removes everything the agent keeps locally for vault (the key cache entry
// and the tree packs of its backup sets, which hold its file names and metadata in the
// clear) because the vault no longer exists: a purge is a crypto-erase, and the agent's
// copies must not outlive it.
func dropVaultCache(cfg Config, vault meta.VaultID, why string) {
	if cfg.CacheDir == "" {
		return
	}
	dir := filepath.Dir(keyCachePath(cfg, vault))
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		cfg.Logger.Warn("local cache of a vault that no longer exists not removed", "dir", dir, "reason", why, "err", err)
		return
	}
	cfg.Logger.Info("local cache of a vault that no longer exists removed", "vault", vault, "dir", dir, "reason", why)
}

func keyCacheOn(cfg Config) bool { return cfg.CacheDir != "" && len(cfg.KeyCacheSecret) > 0 }

// openKeyCache returns the master key from v's cache entry, or false.
func openKeyCache(cfg Config, v meta.Vault, passphrase []byte) (crypt.MasterKey, bool) {
	mk, _, ok := openKeyCacheOf(cfg, v, v.KeyWraps, passphrase)
	return mk, ok
}

// openKeyCacheOf returns the key in v's cache entry, which stands for one of wrappings
// (legacy wrappings of the master key, or the sealed identities of passphrase wraps,
// whose holder key it then holds), and that wrapping's index; or false.
func openKeyCacheOf(cfg Config, v meta.Vault, wrappings [][]byte, passphrase []byte) (crypt.MasterKey, int, bool) {
	if v.Deleted != nil {
		dropKeyCache(cfg, v.ID, "the vault is deleted")
		return crypt.MasterKey{}, 0, false
	}
	if !keyCacheOn(cfg) {
		return crypt.MasterKey{}, 0, false
	}
	p := keyCachePath(cfg, v.ID)
	e, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return crypt.MasterKey{}, 0, false
	}
	if err != nil {
		cfg.Logger.Warn("local key cache unreadable", "file", p, "err", err)
		return crypt.MasterKey{}, 0, false
	}
	mk, i, err := crypt.OpenKeyCache(e, cacheIdentity(v), wrappings, passphrase, cfg.KeyCacheSecret)
	if err != nil {
		// Another passphrase or host secret, a removed wrapping, or a damaged entry: the
		// full unwrap decides, and replaces the entry when it succeeds.
		cfg.Logger.Info("local key cache entry not used", "file", p, "err", err)
		if errors.Is(err, crypt.ErrStale) || errors.Is(err, crypt.ErrInvalid) {
			_ = os.Remove(p)
		}
		return crypt.MasterKey{}, 0, false
	}
	cfg.Logger.Debug("vault key from the local key cache", "vault", v.ID)
	return mk, i, true
}

// saveKeyCache writes v's cache entry for mk, opened from wrapping with passphrase.
// A deleted vault gets no entry.
func saveKeyCache(cfg Config, v meta.Vault, wrapping []byte, mk crypt.MasterKey, passphrase []byte) {
	if !keyCacheOn(cfg) || v.Deleted != nil {
		return
	}
	p := keyCachePath(cfg, v.ID)
	e, err := crypt.SealKeyCache(mk, cacheIdentity(v), wrapping, passphrase, cfg.KeyCacheSecret, cfg.Rand)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(p), 0o700)
	}
	if err == nil {
		err = writeFileAtomic(p, e) // a temporary file: mode 0600
	}
	if err != nil {
		cfg.Logger.Warn("local key cache not written", "file", p, "err", err)
	}
}

// writeFileAtomic writes b to p through a temporary file and a rename, so readers see
// the old content or the new, never a part.
func writeFileAtomic(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}
