package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/tree"
)

func lsSpec() *cmdSpec {
	return &cmdSpec{
		name:  "ls",
		args:  "SNAP [PATH]",
		short: "list the files in a snapshot",
		long: `Lists the snapshot's entries recursively, like ls -l: mode, uid/gid, size,
modification time and path (symlinks show their target). PATH limits the
listing to one directory or file of the snapshot.

SNAP is a full snapshot ID, a unique prefix of it
(at least 4 hex digits), or "latest".

With --json one object per line is printed for each entry: path, name, type,
mode (octal string), uid, gid, size, mtime (RFC 3339) and, for symlinks,
link_target.

A snapshot whose directories expand to more than --max-entries entries
(default 100000000; a directory tree stored once but named in several places
counts each time) is refused before anything is listed.

The vault key is opened from the local key cache that backups keep (sealed
under the passphrase and this client's TLS key; --cache-dir, --no-cache), and
on the host that backed the snapshot up its trees are read from the local tree
pack (each checked against its ID) instead of the cluster.`,
		examples: []string{
			"coffer ls latest",
			"coffer ls 1a2b3c4d /etc/ssh",
			"coffer ls --json latest /home | jq -r .path",
		},
		new: func() command { return &lsCmd{} },
	}
}

// lsCmd lists a snapshot's entries.
type lsCmd struct {
	maxEntries maxEntriesFlag
	cache      cacheFlags
}

func (c *lsCmd) addFlags(fs *flag.FlagSet) {
	c.maxEntries.add(fs)
	c.cache.add(fs, "read every tree from the cluster and derive the vault key from the passphrase")
}

func (c *lsCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 || len(args) > 2 {
		return usagef(lsSpec(), "ls needs SNAP and at most one PATH, got %d arguments", len(args))
	}
	path := ""
	if len(args) == 2 {
		path = args[1]
	}
	limit, err := c.maxEntries.apply(lsSpec())
	if err != nil {
		return err
	}
	ag, snap, done, err := openSnapshot(ctx, a, args[0], limit, c.cache.session(a))
	if err != nil {
		return err
	}
	defer done()
	emit := func(e client.Entry) error { return writeLsLine(a.stdout, e, a.loc) }
	if a.g.json {
		emit = func(e client.Entry) error { return writeJSON(a.stdout, newEntryJSON(e)) }
	}
	if err := ag.List(ctx, snap, path, emit); err != nil {
		return fmt.Errorf("ls %s: %w", snap.ID.Str(), err)
	}
	return nil
}

// entryJSON is one line of `coffer ls --json`.
type entryJSON struct {
	Path       string    `json:"path"`
	Name       string    `json:"name"`
	Type       string    `json:"type"`
	Mode       string    `json:"mode"` // octal permission bits, e.g. "0644"
	UID        uint32    `json:"uid"`
	GID        uint32    `json:"gid"`
	Size       int64     `json:"size"`
	ModTime    time.Time `json:"mtime"`
	LinkTarget string    `json:"link_target,omitempty"`
}

func newEntryJSON(e client.Entry) entryJSON {
	n := e.Node
	return entryJSON{
		Path:       e.Path,
		Name:       n.Name,
		Type:       string(n.Type),
		Mode:       fmt.Sprintf("%04o", uint32(permBits(n))),
		UID:        n.UID,
		GID:        n.GID,
		Size:       n.Size,
		ModTime:    time.Unix(0, n.ModTime).UTC(),
		LinkTarget: n.LinkTarget,
	}
}

// permBits returns the permission, setuid, setgid and sticky bits of n's mode as the
// classic octal value (setuid 04000, setgid 02000, sticky 01000).
func permBits(n tree.Node) uint32 {
	fm := n.FileMode()
	v := uint32(fm.Perm())
	if fm&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if fm&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if fm&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

// typeLetter is the ls -l type column for a node type.
func typeLetter(t tree.Type) byte {
	switch t {
	case tree.TypeDir:
		return 'd'
	case tree.TypeSymlink:
		return 'l'
	case tree.TypeDev:
		return 'b'
	case tree.TypeCharDev:
		return 'c'
	case tree.TypeFIFO:
		return 'p'
	case tree.TypeSocket:
		return 's'
	default:
		return '-'
	}
}

// writeLsLine writes one ls -l style line: mode, uid/gid, size, mtime, path.
func writeLsLine(w io.Writer, e client.Entry, loc *time.Location) error {
	n := e.Node
	size := strconv.FormatInt(n.Size, 10)
	line := fmt.Sprintf("%s %5d/%-5d %12s %s %s", formatMode(typeLetter(n.Type), n.FileMode()), n.UID, n.GID,
		size, time.Unix(0, n.ModTime).In(loc).Format("2006-01-02 15:04:05"), e.Path)
	if n.Type == tree.TypeSymlink {
		line += " -> " + n.LinkTarget
	}
	if _, err := fmt.Fprintln(w, line); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
