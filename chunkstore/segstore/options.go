package segstore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Defaults for zero Options fields.
const (
	DefaultSegmentSize  = 256 << 20
	DefaultMemTableSize = 16 << 20
	DefaultCacheSize    = 8 << 20

	// DefaultCompactThreshold is the default Options.CompactThreshold.
	DefaultCompactThreshold = 0.5

	// MinSegmentSize is the smallest accepted Options.SegmentSize.
	MinSegmentSize = 4 << 10
)

// Options configures a Store. The zero value means "all defaults".
type Options struct {
	// SegmentSize is the size at which the writer starts a new segment file (default
	// 256 MiB, at least MinSegmentSize). A segment grows past it only when a single
	// group commit is larger than the remaining space.
	SegmentSize int64
	// MemTableSize is Pebble's memtable size for the index (default 16 MiB; kept small
	// because many nodes may share a machine in tests).
	MemTableSize int
	// CacheSize is Pebble's block cache size for the index (default 8 MiB).
	CacheSize int64
	// Logger receives recovery reports and Pebble errors (default: discard).
	Logger *slog.Logger
	// NoSync skips every fsync of segment files and of the directory. It is for tests
	// only: with NoSync an acknowledged write can be lost in a crash.
	NoSync bool
	// Now is the clock for touch times (default time.Now). See GCCandidates.
	Now func() time.Time
	// CompactThreshold: a segment other than the one being appended to is compacted
	// when its live bytes fall below this fraction of its record bytes (default 0.5;
	// 0 < CompactThreshold <= 1). See Compact.
	CompactThreshold float64
	// DisableAutoCompact stops the store from compacting by itself after deletes and
	// sweeps; Compact still works.
	DisableAutoCompact bool

	// openFile opens segment files; tests replace it to inject write and sync faults.
	openFile func(path string, flag int, perm os.FileMode) (segFile, error)
	// beforeRemove, if set, runs before compaction syncs the index and removes segment
	// num; an error stops the compaction there (tests simulate a crash with it).
	beforeRemove func(num uint32) error
}

func (o Options) withDefaults() (Options, error) {
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize < MinSegmentSize {
		return o, fmt.Errorf("segstore: options: SegmentSize %d is below the minimum %d", o.SegmentSize, MinSegmentSize)
	}
	if o.MemTableSize < 0 {
		return o, fmt.Errorf("segstore: options: MemTableSize %d is negative", o.MemTableSize)
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.CacheSize < 0 {
		return o, fmt.Errorf("segstore: options: CacheSize %d is negative", o.CacheSize)
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CompactThreshold == 0 {
		o.CompactThreshold = DefaultCompactThreshold
	}
	if !(o.CompactThreshold > 0 && o.CompactThreshold <= 1) {
		return o, fmt.Errorf("segstore: options: CompactThreshold %v is not in (0, 1]", o.CompactThreshold)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.openFile == nil {
		o.openFile = func(path string, flag int, perm os.FileMode) (segFile, error) {
			return os.OpenFile(path, flag, perm)
		}
	}
	return o, nil
}

// pebbleLogger adapts slog to Pebble's Logger: Pebble's chatter goes to Debug, its
// errors to Error. Fatalf logs and panics, as Pebble expects it not to return.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg, "component", "pebble", "fatal", true)
	panic("segstore: pebble: " + msg)
}
