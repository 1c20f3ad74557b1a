// Package raftlog opens the durable Raft log and stable store of a meta server on
// hashicorp/raft-wal: segment files with one fsync per append, old segments dropped
// after snapshots.
package raftlog

import (
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// Options tune the WAL. Zero fields take raft-wal's defaults.
type Options struct {
	// SegmentSize is the target size of a segment file (default 64 MiB). Entries are
	// dropped a whole segment at a time, so a log truncated after a snapshot still serves
	// entries from its newest segment.
	SegmentSize int
}

// Open opens (creating if needed) the WAL under dir with default options and returns it
// as the Raft log store and stable store, and the closer that releases it. Close it only
// after the raft.Raft using it has shut down.
func Open(dir string) (raft.LogStore, raft.StableStore, io.Closer, error) {
	return OpenWithOptions(dir, Options{})
}

// OpenWithOptions is Open with options.
func OpenWithOptions(dir string, o Options) (raft.LogStore, raft.StableStore, io.Closer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("raftlog: open %s: %w", dir, err)
	}
	// NB: WAL.Close does not close the meta store it opened itself (raft-wal v0.4.0), which
	// leaves its bolt file locked so that a reopen in the same process blocks forever. We
	// own the meta store and close it after the WAL.
	md := &metadb.BoltMetaDB{}
	size := o.SegmentSize
	if size <= 0 {
		size = raftwal.DefaultSegmentSize
	}
	w, err := raftwal.Open(dir, raftwal.WithMetaStore(md), raftwal.WithSegmentSize(size))
	if err != nil {
		_ = md.Close()
		return nil, nil, nil, fmt.Errorf("raftlog: open %s: %w", dir, err)
	}
	return w, w, closer{w, md}, nil
}

type closer struct {
	w  *raftwal.WAL
	md *metadb.BoltMetaDB
}

func (c closer) Close() error {
	err := c.w.Close()
	if merr := c.md.Close(); err == nil {
		err = merr
	}
	if err != nil {
		return fmt.Errorf("raftlog: close: %w", err)
	}
	return nil
}
