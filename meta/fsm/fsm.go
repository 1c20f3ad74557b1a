package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/hashicorp/raft"
)

// Keys and prefixes of the state.
const (
	keyApplied     = "meta/applied"
	keyClock       = "meta/clock"
	keyClockLimit  = "meta/clocklimit"
	keyMap         = "map"
	prefixVault    = "v/"
	prefixSnapshot = "s/"
	prefixMeta     = "meta/"
	prefixAudit    = "a/"
	currentFile    = "CURRENT"
)

// ErrClosed is returned by reads after Close.
var ErrClosed = errors.New("fsm: closed")

// Options configure an FSM. Zero fields take defaults.
type Options struct {
	// Logger receives Pebble's messages. Nil discards them.
	Logger *slog.Logger
	// MemTableSize is Pebble's memtable size; default 8 MiB.
	MemTableSize uint64
	// OnPurge, when set, is called on the apply goroutine with the log index of each
	// applied PurgeVault, after the state has been rewritten without the vault (see
	// ApplyBatch). It must not block.
	OnPurge func(index uint64)
	// OnRestore, when set, is called with the restored applied index after each
	// successful Restore (a snapshot installed from the leader, or restored at start): the
	// snapshot may cover purges this replica never applied. It must not block.
	OnRestore func(index uint64)
}

// FSM is the metadata state machine. It implements raft.FSM and raft.BatchingFSM.
//
// Concurrency: Raft calls Apply, ApplyBatch, Snapshot and Restore from one goroutine; the
// read accessors are safe to call concurrently with them and with each other. A read that
// runs during Restore sees either the old or the new state.
type FSM struct {
	dir   string
	opts  Options
	codec command.Codec

	mu struct {
		sync.RWMutex
		h *handle // live database; nil after Close
	}
	applied atomic.Uint64
	clock   atomic.Int64
	limit   atomic.Int64 // ceiling of the cluster clock until the next Tick
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// handle is one open Pebble database with a reference count, so that a Restore can swap
// databases while snapshots or reads still use the old one.
type handle struct {
	db  *pebble.DB
	seq uint64 // directory sequence number (db-NNNNNN)
	dir string // its directory, removed once retired and released when remove is set

	mu      sync.Mutex
	refs    int
	retired bool
	remove  bool
}

func (h *handle) ref() { h.mu.Lock(); h.refs++; h.mu.Unlock() }

// unref drops a reference; the last one on a retired handle closes the database.
func (h *handle) unref() error {
	h.mu.Lock()
	h.refs--
	done := h.retired && h.refs == 0
	h.mu.Unlock()
	if done {
		return h.close()
	}
	return nil
}

// retire marks the handle replaced; it is closed now or at its last unref.
func (h *handle) retire(remove bool) error {
	h.mu.Lock()
	h.retired = true
	h.remove = remove
	done := h.refs == 0
	h.mu.Unlock()
	if done {
		return h.close()
	}
	return nil
}

func (h *handle) close() error {
	err := h.db.Close()
	if h.remove {
		if rerr := os.RemoveAll(h.dir); err == nil {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("fsm: close %s: %w", h.dir, err)
	}
	return nil
}

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any)  { p.l.Debug(fmt.Sprintf(format, args...)) }
func (p pebbleLogger) Errorf(format string, args ...any) { p.l.Error(fmt.Sprintf(format, args...)) }
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
	panic(fmt.Sprintf("pebble: fatal: "+format, args...))
}

// Open opens (creating if needed) the FSM state under dir. It removes leftovers of an
// interrupted Restore.
func Open(dir string, opts Options) (*FSM, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MemTableSize == 0 {
		opts.MemTableSize = 8 << 20
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("fsm: open %s: %w", dir, err)
	}
	f := &FSM{dir: dir, opts: opts, codec: command.NewCodec()}
	seq, err := f.readCurrent()
	if errors.Is(err, os.ErrNotExist) {
		seq = 1
		if err := f.writeCurrent(dbName(seq)); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if err := f.removeStale(dbName(seq)); err != nil {
		return nil, err
	}
	h, err := f.openDB(seq)
	if err != nil {
		return nil, err
	}
	if err := f.loadMeta(h.db); err != nil {
		_ = h.close()
		return nil, err
	}
	f.mu.h = h
	return f, nil
}

func dbName(n uint64) string { return fmt.Sprintf("db-%06d", n) }

// readCurrent returns the sequence number of the live state directory.
func (f *FSM) readCurrent() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(f.dir, currentFile))
	if err != nil {
		return 0, fmt.Errorf("fsm: read %s: %w", currentFile, err)
	}
	name := strings.TrimSpace(string(b))
	var n uint64
	if _, err := fmt.Sscanf(name, "db-%d", &n); err != nil || n == 0 || dbName(n) != name {
		return 0, fmt.Errorf("fsm: %s names %q, not a state directory", filepath.Join(f.dir, currentFile), name)
	}
	return n, nil
}

// writeCurrent atomically points CURRENT at name (write, fsync, rename, fsync dir).
func (f *FSM) writeCurrent(name string) error {
	tmp := filepath.Join(f.dir, currentFile+".tmp")
	fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("fsm: write %s: %w", currentFile, err)
	}
	_, err = fh.WriteString(name + "\n")
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(f.dir, currentFile))
	}
	if err == nil {
		err = syncDir(f.dir)
	}
	if err != nil {
		return fmt.Errorf("fsm: write %s: %w", currentFile, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeStale deletes state directories other than live (an interrupted Restore's output
// or a retired database whose removal did not finish).
func (f *FSM) removeStale(live string) error {
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		return fmt.Errorf("fsm: open %s: %w", f.dir, err)
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "db-") && e.Name() != live {
			if err := os.RemoveAll(filepath.Join(f.dir, e.Name())); err != nil {
				return fmt.Errorf("fsm: remove stale %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

func (f *FSM) openDB(seq uint64) (*handle, error) {
	dir := filepath.Join(f.dir, dbName(seq))
	cache := pebble.NewCache(8 << 20)
	defer cache.Unref() // the DB keeps its own reference
	db, err := pebble.Open(dir, &pebble.Options{
		FormatMajorVersion: pebble.FormatNewest,
		MemTableSize:       f.opts.MemTableSize,
		Cache:              cache,
		Logger:             pebbleLogger{f.opts.Logger},
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: open pebble %s: %w", dir, err)
	}
	return &handle{db: db, seq: seq, dir: dir}, nil
}

type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

// getCopy returns a copy of key's value, or nil, false when absent.
func getCopy(r getter, key string) ([]byte, bool, error) {
	v, c, err := r.Get([]byte(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("fsm: get %q: %w", key, err)
	}
	out := append([]byte(nil), v...)
	return out, true, c.Close()
}

// loadMeta reads the applied index and clock from db into memory.
func (f *FSM) loadMeta(r getter) error {
	var applied uint64
	var clock int64
	if v, ok, err := getCopy(r, keyApplied); err != nil {
		return err
	} else if ok {
		if len(v) != 8 {
			return fmt.Errorf("fsm: %s holds %d bytes, want 8", keyApplied, len(v))
		}
		applied = binary.BigEndian.Uint64(v)
	}
	if v, ok, err := getCopy(r, keyClock); err != nil {
		return err
	} else if ok {
		if len(v) != 8 {
			return fmt.Errorf("fsm: %s holds %d bytes, want 8", keyClock, len(v))
		}
		clock = int64(binary.BigEndian.Uint64(v))
	}
	var limit int64
	if v, ok, err := getCopy(r, keyClockLimit); err != nil {
		return err
	} else if ok {
		if len(v) != 8 {
			return fmt.Errorf("fsm: %s holds %d bytes, want 8", keyClockLimit, len(v))
		}
		limit = int64(binary.BigEndian.Uint64(v))
	}
	f.applied.Store(applied)
	f.clock.Store(clock)
	f.limit.Store(limit)
	return nil
}

// acquire returns the live handle with a reference held; release it with unref.
func (f *FSM) acquire() (*handle, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mu.h == nil {
		return nil, ErrClosed
	}
	f.mu.h.ref()
	return f.mu.h, nil
}

// Close closes the database. Open snapshots keep it alive until they are released. Close
// must not run concurrently with Apply or Restore.
func (f *FSM) Close() error {
	f.mu.Lock()
	h := f.mu.h
	f.mu.h = nil
	f.mu.Unlock()
	if h == nil {
		return nil
	}
	return h.retire(false)
}

// AppliedIndex returns the index of the last log entry applied (0 when none).
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }
