package main

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// TestCLIReadCommandsUseKeyCache: snapshots, ls and dump open the vault key through the
// local key cache, as restore does (a first use fills it, so its entry appears in a new
// cache directory), and --no-cache leaves the cache directory untouched.
func TestCLIReadCommandsUseKeyCache(t *testing.T) {
	env, dir := cliVault(t, "key cache test passphrase")
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "notes.txt"), []byte("cached key, same bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, env, "backup", src); code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	keyEntries := func(cache string) int {
		m, err := filepath.Glob(filepath.Join(cache, "*", "key"))
		if err != nil {
			t.Fatal(err)
		}
		return len(m)
	}
	for _, args := range [][]string{
		{"snapshots"},
		{"ls", "latest"},
		{"dump", "latest", "/src/notes.txt"},
	} {
		t.Run(args[0], func(t *testing.T) {
			cached := filepath.Join(dir, args[0]+"-cache")
			withCache := maps.Clone(env)
			withCache["COFFER_CACHE_DIR"] = cached
			code, out, stderr := cli(t, withCache, args...)
			if code != exitOK {
				t.Fatalf("%v: exit %d: %s", args, code, stderr)
			}
			if args[0] == "dump" && out != "cached key, same bytes" {
				t.Errorf("dump wrote %q", out)
			}
			if n := keyEntries(cached); n != 1 {
				t.Errorf("%v: %d key cache entries in a new cache directory, want 1 (the key was not opened through the cache)", args, n)
			}
			// A second run opens the entry the first one wrote.
			if code, out2, stderr := cli(t, withCache, args...); code != exitOK || out2 != out {
				t.Errorf("%v again: exit %d, output %q (first %q): %s", args, code, out2, out, stderr)
			}

			off := filepath.Join(dir, args[0]+"-off")
			noCache := maps.Clone(env)
			noCache["COFFER_CACHE_DIR"] = off
			if code, out3, stderr := cli(t, noCache, append([]string{args[0], "--no-cache"}, args[1:]...)...); code != exitOK || out3 != out {
				t.Fatalf("%v --no-cache: exit %d, output %q: %s", args, code, out3, stderr)
			}
			if n := keyEntries(off); n != 0 {
				t.Errorf("%v --no-cache: %d key cache entries written", args, n)
			}
		})
	}
}
