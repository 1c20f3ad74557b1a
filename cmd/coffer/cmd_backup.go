package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/hooks"
	"github.com/cofferhq/coffer/meta"
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
downloaded; the cache also keeps the vault key sealed under the passphrase and
this client's TLS key, so that each backup need not repeat the vault's full
key derivation (--no-cache turns both off). Each PATH appears in the snapshot
under its base name: backing up /usr/local/go/src gives /src/... in ls and restore.

On a terminal, a progress line is drawn on stderr: files, bytes processed,
read, new and sent, rate and, once a scan beside the backup has sized the
sources, percent done and ETA. The summary names the
snapshot, the files new/changed/unmodified, the bytes processed and added, and
the throughput. Files that cannot be read are skipped and listed; the snapshot
is still saved and the exit code is 3 ("partially failed").

With --block, PATH (one) is a block device or image file captured in fixed,
aligned blocks (--block-size, default 4M): holes and all-zero blocks are
recorded, not stored; blocks whose hash equals the parent's are not uploaded;
with --dirty-map only the listed blocks are read (format in docs/cli.md).
Restore it with "coffer restore --image FILE SNAP".

Compression (--compression): auto, the default, is zstd's fastest level
(libzstd level 1 in builds with cgo, as "make build" makes the agent; the
pure-Go encoder otherwise), and chunks whose first and last 8 KiB do not
compress are stored as they are; it stores about 5% more bytes than zstd's
default level (restic's), for 2.3x less compression CPU (1.4x without cgo). fast is S2: 2x auto's speed, about 31% more bytes than
zstd's default level. max is zstd's better level: about 2% fewer bytes for
2.8x auto's CPU. off stores chunks uncompressed (2.6x the bytes on source
trees). Restores need no setting (figures: docs/benchmarks.md).

Scheduling (--sched): batch, the default, runs the agent's threads at the
kernel's SCHED_BATCH policy (a waking agent thread never preempts a running
task, the host's own or the agent's; nice values are kept) with one Go thread
more than the CPUs it may use, so that the network is served while chunks are
compressed: on one core, 15% less wall time for large files at the same CPU.
normal leaves the process as it was started. A policy other than the normal
one (chrt), the nice value and GOMAXPROCS set by the caller are always kept.
Hooks started by a batch backup inherit SCHED_BATCH (not the extra thread).

Consistency: --pre-hook runs before anything is read (a failing pre-hook aborts
the backup), --fsfreeze freezes file systems while the backup reads (always
thawed, also on error and after --fsfreeze-timeout), --post-hook runs after,
also when the backup failed (env COFFER_BACKUP_STATUS: success, failed, not
run). Hooks are killed after --hook-timeout; their output goes to stderr.

With --json, a status line (message_type "status": elapsed_s, files, dirs,
bytes_processed, bytes_read, bytes_changed, bytes_uploaded, total_files,
total_bytes, percent_done, eta_s, current) is printed about every second
(not with -q), and last the summary object: message_type "summary",
snapshot_id, status, files_new, files_changed, files_unmodified, dirs,
bytes_processed, bytes_added, chunks_added, duration_s, bytes_read,
skipped [{path, error}], and for --block a blocks object.`,
		examples: []string{
			"coffer backup /etc /home",
			"coffer backup --block /dev/vg0/data-snap",
			"coffer backup --block --dirty-map changes.map disk.img",
			"coffer backup --pre-hook 'lvcreate -s -n snap vg0/data' --post-hook 'lvremove -y vg0/snap' --block /dev/vg0/snap",
			"coffer backup --tag nightly --tag db /var/lib/postgresql",
			"coffer --json -q backup /srv > summary.json",
		},
		new: func() command { return &backupCmd{} },
	}
}

// backupCmd creates a snapshot of PATHs.
type backupCmd struct {
	tags   stringList
	parent string
	force  bool
	cache  cacheFlags

	block     bool
	blockSize byteSize
	dirtyMap  string

	compression string
	sched       string

	preHook, postHook string
	hookTimeout       time.Duration
	freeze            stringList
	freezeTimeout     time.Duration
}

func (c *backupCmd) addFlags(fs *flag.FlagSet) {
	fs.Var(&c.tags, "tag", "add tag `T` to the snapshot (repeatable)")
	fs.StringVar(&c.parent, "parent", "", "compare with snapshot `SNAP` (default: this host's latest of the same paths)")
	fs.BoolVar(&c.force, "force", false, "read every file, even those whose metadata is unchanged")
	fs.StringVar(&c.compression, "compression", "auto", "compression `POLICY`: auto (zstd fastest: about 5% more stored bytes than zstd's default level), fast (S2: about 31% more), max (zstd better: about 2% less, 2.8x auto's CPU) or off")
	c.cache.add(fs, "use no local cache: download the parent's trees from the cluster and derive the vault key from the passphrase")
	fs.StringVar(&c.sched, "sched", schedBatch, "CPU scheduling `POLICY`: batch (the kernel's SCHED_BATCH, and one Go thread more than the CPUs the agent may use, for the network) or normal (as started)")
	fs.BoolVar(&c.block, "block", false, "PATH is a block device or disk image: capture it in fixed blocks")
	fs.Var(&c.blockSize, "block-size", "block size `SIZE` for --block (power of two, 4K to 16M; default 4M)")
	fs.StringVar(&c.dirtyMap, "dirty-map", "", "with --block, read only the blocks listed in dirty-block map `FILE`")
	fs.StringVar(&c.preHook, "pre-hook", "", "run shell command `CMD` before the backup; if it fails, nothing is backed up")
	fs.StringVar(&c.postHook, "post-hook", "", "run shell command `CMD` after the backup, also when it failed")
	fs.DurationVar(&c.hookTimeout, "hook-timeout", hooks.DefaultTimeout, "kill a hook still running after `D`")
	fs.Var(&c.freeze, "fsfreeze", "freeze the file system mounted at `MOUNTPOINT` during the backup (repeatable; root)")
	fs.DurationVar(&c.freezeTimeout, "fsfreeze-timeout", hooks.DefaultFreezeTimeout, "thaw and fail the backup if frozen longer than `D`")
}

// byteSize is a size flag: an integer with an optional K, M or G suffix (powers of 1024).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

// Set parses "4M", "65536", "1G".
func (b *byteSize) Set(v string) error {
	mult := int64(1)
	s := strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(v)), "B")
	switch {
	case strings.HasSuffix(s, "K"), strings.HasSuffix(s, "KI"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "MI"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"), strings.HasSuffix(s, "GI"):
		mult = 1 << 30
	}
	s = strings.TrimRight(s, "KMGI")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return fmt.Errorf("bad size %q (want a positive integer with an optional K, M or G suffix)", v)
	}
	*b = byteSize(n * mult)
	return nil
}

func (c *backupCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		return usagef(backupSpec(), "backup needs at least one PATH")
	}
	if c.block && len(args) != 1 {
		return usagef(backupSpec(), "backup --block takes exactly one PATH (a device or image file), got %d", len(args))
	}
	if !c.block && (c.blockSize != 0 || c.dirtyMap != "") {
		return usagef(backupSpec(), "--block-size and --dirty-map need --block")
	}
	comp, err := crypt.ParseCompression(c.compression)
	if err != nil {
		return usagef(backupSpec(), "--compression: %v", err)
	}
	if err := checkSched(c.sched); err != nil {
		return usagef(backupSpec(), "--sched: %v", err)
	}
	var dirty *client.DirtyMap
	if c.dirtyMap != "" {
		f, err := os.Open(c.dirtyMap)
		if err != nil {
			return fmt.Errorf("backup: dirty map: %w", err)
		}
		dirty, err = client.ReadDirtyMap(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("backup: %s: %w", c.dirtyMap, err)
		}
	}
	paths := make([]string, len(args))
	for i, p := range args {
		abs, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("path %q: %w", p, err)
		}
		// Fail before connecting or asking for the passphrase, unless a pre-hook may
		// create the path (an LVM or btrfs snapshot).
		if _, err := os.Lstat(abs); err != nil && c.preHook == "" {
			return fmt.Errorf("backup: %w", err)
		}
		paths[i] = abs
	}
	a.tuneForUpload("backup", c.sched)
	cacheDir := c.cache.resolve(a)
	s, ag, err := openAgent(ctx, a, func(s *session) { s.useCache(cacheDir) })
	if err != nil {
		return err
	}
	defer s.Close()
	defer ag.Close()

	job := recordManualJob(ctx, a, s)
	prog := newProgress(a)
	progress := prog.callback()
	if jp := newJSONProgress(a); jp != nil {
		progress = jp.callback()
	}
	start := a.now()
	var res client.BackupResult
	spec := hooks.Spec{Pre: c.preHook, Post: c.postHook, Timeout: c.hookTimeout, Freeze: c.freeze,
		FreezeTimeout: c.freezeTimeout, Stdout: a.stderr, Stderr: a.stderr}
	saved := false
	err = hooks.Run(ctx, spec, func(ctx context.Context) error {
		var err error
		if c.block {
			res, err = ag.BackupBlock(ctx, client.BlockOptions{Path: paths[0], BlockSize: int(c.blockSize), DirtyMap: dirty,
				Tags: c.tags, Parent: c.parent, Force: c.force, Progress: progress, Compression: comp})
		} else {
			res, err = ag.Backup(ctx, client.BackupOptions{Paths: paths, Tags: c.tags, Progress: progress,
				Parent: c.parent, Force: c.force, Compression: comp})
		}
		prog.done()
		saved = err == nil
		return err
	})
	if err != nil && !saved {
		finishManualJob(ctx, a, s, job, meta.JobReport{Status: meta.JobFailed, Error: err.Error()})
		return fmt.Errorf("backup: %w", err)
	}
	hookErr := err
	sum := newBackupSummary(res, a.now().Sub(start))
	rep := meta.JobReport{Status: meta.JobCompleted, Snapshot: res.Snapshot.ID.String(), Stats: meta.JobStats{
		FilesNew: sum.FilesNew, FilesChanged: sum.FilesChanged, FilesUnmodified: sum.FilesUnmodified,
		FilesSkipped: int64(len(sum.Skipped)), Dirs: sum.DirsTotal, BytesProcessed: sum.BytesProcessed,
		BytesRead: sum.BytesRead, BytesAdded: sum.BytesAdded, BytesNew: res.PlainAdded, ChunksAdded: sum.ChunksAdded}}
	if hookErr != nil || sum.Status == statusPartial {
		rep.Status = meta.JobPartial
		if hookErr != nil {
			rep.Error = hookErr.Error()
		} else {
			rep.Error = fmt.Sprintf("%d unreadable paths skipped", len(sum.Skipped))
		}
	}
	finishManualJob(ctx, a, s, job, rep)
	if a.g.json {
		if err := writeJSON(a.stdout, sum); err != nil {
			return err
		}
	} else if !a.g.quiet {
		printBackupSummary(a, sum)
	}
	if hookErr != nil {
		return fmt.Errorf("backup: snapshot %s saved, but: %w", res.Snapshot.ID.Str(), hookErr)
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
	fmt.Fprintf(w, "Read:       %s\n", formatBytes(s.BytesRead))
	if b := s.Blocks; b != nil {
		fmt.Fprintf(w, "Blocks:     %d of %s: %d changed, %d holes or zero, %d read, %d taken from the parent\n",
			b.Total, formatBytes(int64(b.BlockSize)), b.Changed, b.Holes, b.Read, b.Reused)
	}
	fmt.Fprintf(w, "Added:      %s in %d new chunks\n", formatBytes(s.BytesAdded), s.ChunksAdded)
	if n := len(s.Skipped); n > 0 {
		fmt.Fprintf(w, "Skipped:    %d unreadable %s:\n", n, plural(n, "file", "files"))
		for _, sk := range s.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", sk.Path, sk.Error)
		}
	}
	fmt.Fprintf(w, "snapshot %s saved (%s)\n", shortHex(s.SnapshotID), s.Status)
}
