package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/mount"
	"github.com/cofferhq/coffer/meta"
)

func mountSpec() *cmdSpec {
	return &cmdSpec{
		name:  "mount",
		args:  "MOUNTPOINT",
		short: "browse the vault's snapshots as a read-only file system",
		long: `Mounts the vault's snapshots at MOUNTPOINT (an existing directory) as a
read-only FUSE file system and serves it until interrupted (Ctrl-C or SIGTERM),
then unmounts it:

  snapshots/<time>_<host>_<id>/...   every snapshot, as backed up
  hosts/<host>/latest                symlink to the host's newest snapshot
  hosts/<host>/<time>_<host>_<id>    symlinks to each of the host's snapshots

Modes, owners, times, symlinks, hardlinks (one inode, its link count) and
sparse files (size and holes) are as the snapshot recorded them; a block image
("backup --block") is a file. Directories are read when they are looked at and
files chunk by chunk when they are read, every chunk checked against its ID as
a restore does, through a cache of at most --read-cache bytes of chunks
(default 64M). The list of snapshots is read again every 30 seconds.

A restore-operator certificate reads each snapshot through a restore grant for
that snapshot, asked for when the snapshot is first looked at and renewed
before it expires, exactly as "restore" does: a snapshot the cluster refuses a
grant for cannot be entered. Only the user who mounted it can enter the mount
(no allow_other); it is mounted nosuid and nodev. The vault key is opened as
"restore" opens it (--cache-dir, --no-cache, --platform).`,
		examples: []string{
			"coffer mount /mnt/coffer",
			"ls /mnt/coffer/hosts/web01/latest/etc",
			"coffer mount --read-cache 256M /mnt/coffer",
		},
		new: func() command { return &mountCmd{} },
	}
}

// mountCmd serves the vault's snapshots as a file system.
type mountCmd struct {
	cache     cacheFlags
	readCache byteSize
	platform  bool
	debug     bool
}

func (c *mountCmd) addFlags(fs *flag.FlagSet) {
	fs.Var(&c.readCache, "read-cache", "keep at most `SIZE` of chunks read (K, M or G suffix; default 64M)")
	fs.BoolVar(&c.platform, "platform", false, "unlock a platform-managed vault through the platform key, without a passphrase (admin certificate; audited)")
	fs.BoolVar(&c.debug, "debug-fuse", false, "log every FUSE request (verbose)")
	c.cache.add(fs, keyCacheOffUsage)
}

// unmountTries bounds the attempts to unmount a busy mount point after an interrupt.
const unmountTries = 20

func (c *mountCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(mountSpec(), "mount needs exactly one MOUNTPOINT, got %d arguments", len(args))
	}
	cacheDir := c.cache.resolve(a)
	s, ag, err := openAgent(ctx, a, func(s *session) { s.useCache(cacheDir); s.platformUnlock = c.platform })
	if err != nil {
		return err
	}
	defer s.Close()
	defer ag.Close()
	reader := func(ctx context.Context, snap meta.Snapshot) (*client.Agent, time.Time, error) {
		asked := a.now()
		r, ttl, err := s.readerFor(ctx, ag, snap)
		if err != nil || ttl == 0 {
			return r, time.Time{}, err
		}
		return r, asked.Add(ttl), nil
	}
	fsys, err := mount.Mount(ctx, args[0], mount.Options{
		Agent:      ag,
		Reader:     reader,
		CacheBytes: int64(c.readCache),
		Now:        a.now,
		Logger:     s.logger,
		Debug:      c.debug,
	})
	if err != nil {
		return plainf(err, "%s", errorMessage(err))
	}
	if !a.g.quiet {
		fmt.Fprintf(a.stderr, "mounted vault %s at %s; interrupt (Ctrl-C) to unmount\n", s.vault, fsys.Dir())
	}
	served := make(chan struct{})
	go func() {
		fsys.Wait()
		close(served)
	}()
	select {
	case <-served: // unmounted from outside (fusermount -u, umount)
		return nil
	case <-ctx.Done():
	}
	for try := 1; ; try++ {
		err := fsys.Unmount()
		if err == nil {
			break
		}
		if try == unmountTries {
			return fmt.Errorf("mount: %s stays mounted: %w", fsys.Dir(), err)
		}
		if try == 1 {
			fmt.Fprintf(a.stderr, "coffer: %s is busy; retrying the unmount\n", fsys.Dir())
		}
		select {
		case <-served:
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
	if !a.g.quiet {
		fmt.Fprintf(a.stderr, "unmounted %s\n", fsys.Dir())
	}
	return nil
}
