package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cofferhq/coffer/client"
)

func backupSpec() *cmdSpec {
	return &cmdSpec{
		name:  "backup",
		args:  "PATH...",
		short: "back up files and directories into a new snapshot",
		long: `Walks each PATH, reads only files that changed since this host's last snapshot
of the same paths (or --parent SNAP), stores new chunks (deduplicated,
compressed, encrypted) and commits one snapshot. A file whose size, mtime,
ctime, inode and mode are unchanged is not opened; --force reads everything.
The parent's trees are kept in a local cache (--cache-dir) so they need not be
downloaded. Each PATH appears in the snapshot under its base name:
backing up /usr/local/go/src gives /src/... in ls and restore.

On a terminal, a progress line is drawn on stderr. The summary names the
snapshot, the files new/changed/unmodified, the bytes processed and added, and
the throughput. Files that cannot be read are skipped and listed; the snapshot
is still saved and the exit code is 3 ("partially failed").

With --json only one summary object is printed: message_type "summary",
snapshot_id, status, files_new, files_changed, files_unmodified, dirs,
bytes_processed, bytes_added, chunks_added, duration_s, skipped [{path, error}].`,
		examples: []string{
			"coffer backup /etc /home",
			"coffer backup --tag nightly --tag db /var/lib/postgresql",
			"coffer --json backup /srv > summary.json",
		},
		new: func() command { return &backupCmd{} },
	}
}

// backupCmd creates a snapshot of PATHs.
type backupCmd struct {
	tags     stringList
	parent   string
	force    bool
	cacheDir string
	noCache  bool
}

func (c *backupCmd) addFlags(fs *flag.FlagSet) {
	fs.Var(&c.tags, "tag", "add tag `T` to the snapshot (repeatable)")
	fs.StringVar(&c.parent, "parent", "", "compare with snapshot `SNAP` (default: this host's latest of the same paths)")
	fs.BoolVar(&c.force, "force", false, "read every file, even those whose metadata is unchanged")
	fs.StringVar(&c.cacheDir, "cache-dir", "", "local cache directory `DIR` (env "+envCacheDir+"; default the user cache dir + /coffer)")
	fs.BoolVar(&c.noCache, "no-cache", false, "use no local cache: download the parent's trees from the cluster")
}

// cacheDir resolves the local agent cache: --no-cache, --cache-dir, COFFER_CACHE_DIR,
// then $XDG_CACHE_HOME/coffer or $HOME/.cache/coffer; "" means no cache.
func (c *backupCmd) resolveCacheDir(a *app) string {
	switch {
	case c.noCache:
		return ""
	case c.cacheDir != "":
		return c.cacheDir
	case a.getenv(envCacheDir) != "":
		return a.getenv(envCacheDir)
	case a.getenv("XDG_CACHE_HOME") != "":
		return filepath.Join(a.getenv("XDG_CACHE_HOME"), "coffer")
	case a.getenv("HOME") != "":
		return filepath.Join(a.getenv("HOME"), ".cache", "coffer")
	}
	return ""
}

func (c *backupCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		return usagef(backupSpec(), "backup needs at least one PATH")
	}
	paths := make([]string, len(args))
	for i, p := range args {
		abs, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("path %q: %w", p, err)
		}
		// Fail before connecting or asking for the passphrase.
		if _, err := os.Lstat(abs); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		paths[i] = abs
	}
	cacheDir := c.resolveCacheDir(a)
	s, ag, err := openAgent(ctx, a, func(cfg *client.Config) { cfg.CacheDir = cacheDir })
	if err != nil {
		return err
	}
	defer s.Close()
	defer ag.Close()

	prog := newProgress(a)
	start := a.now()
	res, err := ag.Backup(ctx, client.BackupOptions{Paths: paths, Tags: c.tags, Progress: prog.callback(),
		Parent: c.parent, Force: c.force})
	prog.done()
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	sum := newBackupSummary(res, a.now().Sub(start))
	if a.g.json {
		if err := writeJSON(a.stdout, sum); err != nil {
			return err
		}
	} else if !a.g.quiet {
		printBackupSummary(a, sum)
	}
	if sum.Status == statusPartial {
		return &partialError{snapshot: res.Snapshot.ID.Str(), skipped: len(sum.Skipped)}
	}
	return nil
}

// printBackupSummary writes the human summary of a backup.
func printBackupSummary(a *app, s backupSummary) {
	w := a.stdout
	fmt.Fprintf(w, "Files:      %d new, %d changed, %d unmodified\n", s.FilesNew, s.FilesChanged, s.FilesUnmodified)
	fmt.Fprintf(w, "Dirs:       %d\n", s.DirsTotal)
	fmt.Fprintf(w, "Processed:  %s in %s (%s)\n", formatBytes(s.BytesProcessed),
		formatDuration(secondsDuration(s.DurationS)), formatRate(s.BytesProcessed, s.DurationS))
	fmt.Fprintf(w, "Added:      %s in %d new chunks\n", formatBytes(s.BytesAdded), s.ChunksAdded)
	if n := len(s.Skipped); n > 0 {
		fmt.Fprintf(w, "Skipped:    %d unreadable %s:\n", n, plural(n, "file", "files"))
		for _, sk := range s.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", sk.Path, sk.Error)
		}
	}
	fmt.Fprintf(w, "snapshot %s saved (%s)\n", shortHex(s.SnapshotID), s.Status)
}
