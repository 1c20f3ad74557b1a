package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/cofferhq/coffer/client"
)

func restoreSpec() *cmdSpec {
	return &cmdSpec{
		name:  "restore",
		args:  "SNAP",
		short: "restore a snapshot into a directory",
		long: `Restores the snapshot's files, directories and symlinks below --target (a
directory that does not exist yet or is empty; nothing is written outside it) with
their modes, times and (when running as root) owners. Every chunk is checked
against its ID; a restore either writes the exact bytes that were backed up or
fails. --include (repeatable) restores only the named snapshot paths and
everything below them. Everything is created relative to open directory
handles and no symlink is ever followed, so neither the snapshot nor another
process changing the target meanwhile can make it write elsewhere. A snapshot
(or the --include selection) whose directories expand to more than
--max-entries entries (default 100000000; a directory tree stored once but
named in several places counts each time) is refused before anything is
written.

--image FILE writes one file of the snapshot, typically the image of a
"backup --block", to FILE: a new file (sparse where the image has holes or
zeros) or an existing block device at least as large (holes written as
zeros). A snapshot with several entries needs --include naming the file.

The vault key is opened from the local key cache that backups keep (sealed
under the passphrase and this client's TLS key; --cache-dir, --no-cache), so a
restore need not repeat the vault's full key derivation.

SNAP is a full snapshot ID, a unique prefix of it
(at least 4 hex digits), or "latest".

With --json one summary object is printed: message_type "summary",
snapshot_id, target, files, dirs, bytes, duration_s.`,
		examples: []string{
			"coffer restore latest --target /tmp/restore",
			"coffer restore --image /tmp/disk.img latest",
			"coffer restore 1a2b3c4d --target /srv/restore --include /etc --include /home/alice",
		},
		new: func() command { return &restoreCmd{} },
	}
}

// restoreCmd restores a snapshot.
type restoreCmd struct {
	target     string
	include    stringList
	image      string
	cache      cacheFlags
	maxEntries maxEntriesFlag
	platform   bool
}

func (c *restoreCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.target, "target", "", "restore into directory `DIR` (required; must not exist or be empty)")
	fs.BoolVar(&c.platform, "platform", false, "unlock a platform-managed vault through the platform key, without a passphrase (admin certificate; audited)")
	fs.Var(&c.include, "include", "restore only snapshot path `PATH` and what is below it (repeatable)")
	c.maxEntries.add(fs)
	c.cache.add(fs, keyCacheOffUsage)
	fs.StringVar(&c.image, "image", "", "write the snapshot's image (a --block backup, or the one --include file) to new file or block device `FILE`")
}

func (c *restoreCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(restoreSpec(), "restore needs exactly one SNAP, got %d arguments", len(args))
	}
	if c.image != "" {
		if c.target != "" || len(c.include) > 1 {
			return usagef(restoreSpec(), "--image takes no --target and at most one --include (the file to write)")
		}
	} else if c.target == "" {
		return usagef(restoreSpec(), "restore needs --target DIR (or --image FILE)")
	}
	cacheDir := c.cache.resolve(a)
	limit, err := c.maxEntries.apply(restoreSpec())
	if err != nil {
		return err
	}
	ag, snap, done, err := openSnapshot(ctx, a, args[0], func(s *session) { s.useCache(cacheDir); s.platformUnlock = c.platform }, limit)
	if err != nil {
		return err
	}
	defer done()
	prog := newProgress(a)
	var res client.RestoreResult
	target := c.target
	if c.image != "" {
		target = c.image
		var path string
		if len(c.include) == 1 {
			path = c.include[0]
		}
		res, err = ag.RestoreImage(ctx, snap, client.ImageRestoreOptions{Path: path, Target: c.image})
	} else {
		res, err = ag.Restore(ctx, snap, client.RestoreOptions{Target: c.target, Include: c.include, Progress: prog.callback()})
	}
	prog.done()
	if err != nil {
		return fmt.Errorf("restore %s: %w", snap.ID.Str(), err)
	}
	sum := restoreSummary{
		MessageType: "summary",
		SnapshotID:  snap.ID.String(),
		Target:      target,
		Files:       res.Files,
		Dirs:        res.Dirs,
		Bytes:       res.Bytes,
		DurationS:   res.DurationS,
	}
	if a.g.json {
		return writeJSON(a.stdout, sum)
	}
	if !a.g.quiet {
		printRestoreSummary(a, sum)
	}
	return nil
}

// printRestoreSummary writes the human summary of a restore.
func printRestoreSummary(a *app, s restoreSummary) {
	fmt.Fprintf(a.stdout, "restored snapshot %s to %s: %d %s, %d %s, %s in %s (%s)\n",
		shortHex(s.SnapshotID), s.Target, s.Files, plural(int(s.Files), "file", "files"),
		s.Dirs, plural(int(s.Dirs), "dir", "dirs"), formatBytes(s.Bytes),
		formatDuration(secondsDuration(s.DurationS)), formatRate(s.Bytes, s.DurationS))
}
