// Package raftlog opens the durable Raft log and stable store of a meta server: a
// bbolt file through hashicorp/raft-boltdb v2, one fsync per appended batch (raft's
// BatchApplyCh makes batches large under load).
//
// NB: it used hashicorp/raft-wal v0.4.0 until a restart of the dev cluster panicked in
// raft.NewRaft with "sealed segment has no index block": v0.4.0 marks the tail segment
// sealed on a suffix truncation (raft clearing a conflicting log tail after a leader
// change) without writing its index block (hashicorp/raft-wal#31). The fix (#33) is on
// raft-wal's main branch but in no tagged release the module proxy serves, so the
// store is raft-boltdb v2, which the issue names as the alternative.
package raftlog

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// fileName is the bbolt file under the directory Open is given.
const fileName = "raft.db"

// Open opens (creating if needed) the log under dir and returns it as the Raft log
// store and stable store, and the closer that releases it. Close it only after the
// raft.Raft using it has shut down. A second Open of the same dir in any process waits
// up to 5 s for the file lock, then fails.
func Open(dir string) (raft.LogStore, raft.StableStore, io.Closer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("raftlog: open %s: %w", dir, err)
	}
	st, err := raftboltdb.New(raftboltdb.Options{
		Path:                    filepath.Join(dir, fileName),
		BoltOptions:             &bbolt.Options{Timeout: 5 * time.Second, FreelistType: bbolt.FreelistMapType, NoFreelistSync: true},
		MsgpackUseNewTimeFormat: true,
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("raftlog: open %s: %w", dir, err)
	}
	return st, st, closer{st}, nil
}

type closer struct{ st *raftboltdb.BoltStore }

func (c closer) Close() error {
	if err := c.st.Close(); err != nil {
		return fmt.Errorf("raftlog: close: %w", err)
	}
	return nil
}
