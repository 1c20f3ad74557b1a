package segstore

import (
	"time"

	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/storetest"
)

// openTest opens a store in a fresh temporary directory and closes it at cleanup.
func openTest(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.RunShardStore(t, func(t *testing.T) chunkstore.ShardStore {
		return openTest(t, Options{NoSync: true})
	})
}

// Small segments make the suite roll segment files many times.
func TestConformanceSmallSegments(t *testing.T) {
	storetest.RunShardStore(t, func(t *testing.T) chunkstore.ShardStore {
		return openTest(t, Options{NoSync: true, SegmentSize: MinSegmentSize})
	})
}

// The suite with fsync on: the production configuration.
func TestConformanceSync(t *testing.T) {
	storetest.RunShardStore(t, func(t *testing.T) chunkstore.ShardStore {
		return openTest(t, Options{})
	})
}

func TestGCConformance(t *testing.T) {
	storetest.RunGCStore(t, func(t *testing.T, now func() time.Time) chunkstore.GCStore {
		return openTest(t, Options{NoSync: true, Now: now})
	})
}

// The GC suite with fsync on and small segments.
func TestGCConformanceSync(t *testing.T) {
	storetest.RunGCStore(t, func(t *testing.T, now func() time.Time) chunkstore.GCStore {
		return openTest(t, Options{Now: now, SegmentSize: MinSegmentSize})
	})
}
