package main

import (
	"flag"
	"path/filepath"
)

// cacheFlags are --cache-dir and --no-cache, shared by the commands that use the local
// agent cache (backup: trees and key; restore, ls, dump and snapshots: key, and trees
// for restore, ls and dump).
type cacheFlags struct {
	dir string
	off bool
}

// add registers the flags; offUsage says what --no-cache gives up.
func (c *cacheFlags) add(fs *flag.FlagSet, offUsage string) {
	fs.StringVar(&c.dir, "cache-dir", "", "local cache directory `DIR` (env "+envCacheDir+"; default the user cache dir + /coffer)")
	fs.BoolVar(&c.off, "no-cache", false, offUsage)
}

// resolve returns the local agent cache directory: --no-cache, --cache-dir,
// COFFER_CACHE_DIR, then $XDG_CACHE_HOME/coffer or $HOME/.cache/coffer; "" means no cache.
func (c *cacheFlags) resolve(a *app) string {
	switch {
	case c.off:
		return ""
	case c.dir != "":
		return c.dir
	case a.getenv(envCacheDir) != "":
		return a.getenv(envCacheDir)
	case a.getenv("XDG_CACHE_HOME") != "":
		return filepath.Join(a.getenv("XDG_CACHE_HOME"), "coffer")
	case a.getenv("HOME") != "":
		return filepath.Join(a.getenv("HOME"), ".cache", "coffer")
	}
	return ""
}

// keyCacheOffUsage is --no-cache's usage on the commands that only read a vault.
const keyCacheOffUsage = "derive the vault key from the passphrase instead of opening it from the local key cache"

// keyCacheHelp is the help paragraph of the read commands that take --cache-dir for the key.
const keyCacheHelp = `The vault key is opened from the local key cache that backups keep (sealed
under the passphrase and this client's TLS key; --cache-dir, --no-cache), as
restore does, so the command need not repeat the vault's full key derivation.`

// session returns the session option that turns on the local cache resolve names.
func (c *cacheFlags) session(a *app) func(*session) {
	dir := c.resolve(a)
	return func(s *session) { s.useCache(dir) }
}
