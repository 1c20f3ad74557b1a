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
//
// bbolt never overwrites a freed page: entries that raft deletes after a snapshot stay
// readable in the file until their pages are reused. Compact rewrites the file with only
// the live entries, for when deleted entries must be gone from the disk (a purged
// vault's key wrapping).
package raftlog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// fileName is the bbolt file under the directory Open is given.
const fileName = "raft.db"

// ErrClosed is returned by every method after Close, or after a Compact that could not
// reopen the file.
var ErrClosed = errors.New("raftlog: closed")

// Store is the Raft log store and stable store of one meta server. Safe for concurrent
// use; Compact blocks the other methods while it runs.
type Store struct {
	path string
	mu   struct {
		sync.RWMutex
		st *raftboltdb.BoltStore // nil once closed
	}
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

func boltOptions() *bbolt.Options {
	return &bbolt.Options{Timeout: 5 * time.Second, FreelistType: bbolt.FreelistMapType, NoFreelistSync: true}
}

func openBolt(path string) (*raftboltdb.BoltStore, error) {
	return raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: boltOptions(), MsgpackUseNewTimeFormat: true})
}

// Open opens (creating if needed) the log under dir. Close it only after the raft.Raft
// using it has shut down. A second Open of the same dir in any process waits up to 5 s
// for the file lock, then fails. A leftover of an interrupted Compact is removed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftlog: open %s: %w", dir, err)
	}
	s := &Store{path: filepath.Join(dir, fileName)}
	if err := os.Remove(s.tmpPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("raftlog: open %s: %w", dir, err)
	}
	st, err := openBolt(s.path)
	if err != nil {
		return nil, fmt.Errorf("raftlog: open %s: %w", dir, err)
	}
	s.mu.st = st
	return s, nil
}

func (s *Store) tmpPath() string { return s.path + ".compact" }

// Close closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.st == nil {
		return nil
	}
	err := s.mu.st.Close()
	s.mu.st = nil
	if err != nil {
		return fmt.Errorf("raftlog: close: %w", err)
	}
	return nil
}

// Compact rewrites the file with only its live entries (bbolt.Compact into a new file,
// fsync, rename over the old one, fsync the directory) and reopens it, so that entries
// deleted before it are no longer anywhere in the file. Every other call waits while it
// runs. On an error before the rename the old file is kept; if the file cannot be
// reopened, the store is closed and every later call fails with ErrClosed.
func (s *Store) Compact() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.st == nil {
		return ErrClosed
	}
	if err := s.mu.st.Close(); err != nil {
		s.mu.st = nil
		return fmt.Errorf("raftlog: compact: close: %w", err)
	}
	cerr := s.copyLive()
	st, err := openBolt(s.path)
	if err != nil {
		return fmt.Errorf("raftlog: compact: reopen %s: %w", s.path, errors.Join(cerr, err))
	}
	s.mu.st = st
	if cerr != nil {
		return fmt.Errorf("raftlog: compact: %w", cerr)
	}
	return nil
}

// copyLive writes the live entries of the (closed) file into a new file and renames it
// over the old one.
func (s *Store) copyLive() error {
	tmp := s.tmpPath()
	src, err := bbolt.Open(s.path, 0o600, boltOptions())
	if err != nil {
		return err
	}
	dst, err := bbolt.Open(tmp, 0o600, boltOptions())
	if err != nil {
		_ = src.Close()
		return err
	}
	err = bbolt.Compact(dst, src, 0)
	err = errors.Join(err, dst.Sync(), dst.Close(), src.Close())
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(s.path))
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// Size returns the file's size in bytes.
func (s *Store) Size() (int64, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0, fmt.Errorf("raftlog: %w", err)
	}
	return fi.Size(), nil
}

// with runs f on the open store under the read lock.
func (s *Store) with(f func(st *raftboltdb.BoltStore) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mu.st == nil {
		return ErrClosed
	}
	return f(s.mu.st)
}

// FirstIndex implements raft.LogStore.
func (s *Store) FirstIndex() (i uint64, err error) {
	err = s.with(func(st *raftboltdb.BoltStore) error { i, err = st.FirstIndex(); return err })
	return i, err
}

// LastIndex implements raft.LogStore.
func (s *Store) LastIndex() (i uint64, err error) {
	err = s.with(func(st *raftboltdb.BoltStore) error { i, err = st.LastIndex(); return err })
	return i, err
}

// GetLog implements raft.LogStore.
func (s *Store) GetLog(index uint64, log *raft.Log) error {
	return s.with(func(st *raftboltdb.BoltStore) error { return st.GetLog(index, log) })
}

// StoreLog implements raft.LogStore.
func (s *Store) StoreLog(log *raft.Log) error {
	return s.with(func(st *raftboltdb.BoltStore) error { return st.StoreLog(log) })
}

// StoreLogs implements raft.LogStore.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	return s.with(func(st *raftboltdb.BoltStore) error { return st.StoreLogs(logs) })
}

// DeleteRange implements raft.LogStore.
func (s *Store) DeleteRange(lo, hi uint64) error {
	return s.with(func(st *raftboltdb.BoltStore) error { return st.DeleteRange(lo, hi) })
}

// Set implements raft.StableStore.
func (s *Store) Set(k, v []byte) error {
	return s.with(func(st *raftboltdb.BoltStore) error { return st.Set(k, v) })
}

// Get implements raft.StableStore.
func (s *Store) Get(k []byte) (v []byte, err error) {
	err = s.with(func(st *raftboltdb.BoltStore) error { v, err = st.Get(k); return err })
	return v, err
}

// SetUint64 implements raft.StableStore.
func (s *Store) SetUint64(k []byte, v uint64) error {
	return s.with(func(st *raftboltdb.BoltStore) error { return st.SetUint64(k, v) })
}

// GetUint64 implements raft.StableStore.
func (s *Store) GetUint64(k []byte) (v uint64, err error) {
	err = s.with(func(st *raftboltdb.BoltStore) error { v, err = st.GetUint64(k); return err })
	return v, err
}
