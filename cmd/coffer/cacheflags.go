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
