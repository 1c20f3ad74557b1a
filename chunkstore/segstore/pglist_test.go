package segstore

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/chunkstore"
)

// checkPGListing checks that the PGs of pgCount together list exactly what
// EnumerateShards lists (keys, meta, lengths).
func checkPGListing(t *testing.T, s *Store, pgCount uint32) {
	t.Helper()
	ctx := context.Background()
	var all, byPG []chunkstore.ShardInfo
	if err := s.EnumerateShards(ctx, nil, func(si chunkstore.ShardInfo) error {
		all = append(all, si)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for pg := range pgCount {
		if err := s.EnumeratePG(ctx, pgCount, pg, nil, func(si chunkstore.ShardInfo) error {
			if got := chunkstore.PGOf(si.Key.ID, pgCount); got != pg {
				t.Fatalf("EnumeratePG(%d, %d) listed %s of PG %d", pgCount, pg, keyStr(si.Key), got)
			}
			byPG = append(byPG, si)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	slices.SortFunc(byPG, func(a, b chunkstore.ShardInfo) int { return compareShardKeys(a.Key, b.Key) })
	if !slices.Equal(all, byPG) {
		t.Fatalf("PG listings (%d shards) differ from EnumerateShards (%d shards)", len(byPG), len(all))
	}
}

// toIndexVersion2 turns dir's index into the layout before PG listing keys: no 'p' keys,
// m/version 2.
func toIndexVersion2(t *testing.T, dir string) {
	t.Helper()
	db, err := pebble.Open(filepath.Join(dir, "index"), &pebble.Options{FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	if err := errors.Join(
		b.DeleteRange(pgLower, pgUpper, nil),
		b.Set(keyVersion, binary.BigEndian.AppendUint32(nil, 2), nil),
		b.Commit(pebble.Sync),
		b.Close(),
		db.Close(),
	); err != nil {
		t.Fatal(err)
	}
}

// A version 2 index (no PG listing keys) is upgraded in place at Open: every shard is
// still served, deleted ones stay deleted, the PG listings cover the index exactly, and
// the upgrade is kept.
func TestUpgradeToIndexVersion3(t *testing.T) {
	dir := t.TempDir()
	opts := Options{NoSync: true, DisableAutoCompact: true}
	s := mustOpen(t, dir, opts)
	var shards []chunkstore.Shard
	for n := range 300 {
		shards = append(shards, mkShard(n, uint8(n%6), 20+n%50))
	}
	mustPut(t, s, shards...)
	mustDelete(t, s, shards[0].Key, shards[7].Key)
	mustClose(t, s)
	toIndexVersion2(t, dir)

	s = mustOpen(t, dir, opts)
	if ver, _, err := s.metaValue(keyVersion); err != nil || binary.BigEndian.Uint32(ver) != indexVersion {
		t.Errorf("index version after the upgrade = %x, %v; want %d", ver, err, indexVersion)
	}
	for i, sh := range shards {
		if i == 0 || i == 7 {
			if has, err := s.HasShards(context.Background(), []chunkstore.ShardKey{sh.Key}); err != nil || has[0] {
				t.Errorf("deleted shard %s: has %v, %v", keyStr(sh.Key), has, err)
			}
			continue
		}
		expectShard(t, s, sh)
	}
	for _, pgCount := range []uint32{1, 8, 256} {
		checkPGListing(t, s, pgCount)
	}
	mustPut(t, s, mkShard(1000, 1, 30))
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	checkPGListing(t, s, 16)
}

// Compaction moves records without touching the PG listing keys, and a rebuild of the
// index brings them back and changes every PG's mark.
func TestPGListingCompactionRebuild(t *testing.T) {
	s := openTest(t, Options{NoSync: true, DisableAutoCompact: true, SegmentSize: 4096})
	ctx := context.Background()
	var shards []chunkstore.Shard
	for n := range 200 {
		shards = append(shards, mkShard(n, 0, 100))
	}
	mustPut(t, s, shards...)
	for i := 0; i < len(shards); i += 2 {
		mustDelete(t, s, shards[i].Key)
	}
	if res, err := s.Compact(ctx); err != nil || res.Segments == 0 {
		t.Fatalf("Compact = %+v, %v; want segments compacted", res, err)
	}
	checkPGListing(t, s, 32)
	v0, err := s.PGVersions(ctx, 32)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RebuildIndex(ctx); err != nil {
		t.Fatal(err)
	}
	checkPGListing(t, s, 32)
	v1, err := s.PGVersions(ctx, 32)
	if err != nil {
		t.Fatal(err)
	}
	for pg := range uint32(32) {
		if v0.Of(pg) == v1.Of(pg) {
			t.Errorf("PG %d: mark unchanged by a rebuild", pg)
		}
	}
}

// Marks restart under a new incarnation at every Open.
func TestPGVersionsIncarnation(t *testing.T) {
	dir := t.TempDir()
	opts := Options{NoSync: true}
	s := mustOpen(t, dir, opts)
	mustPut(t, s, mkShard(1, 0, 10))
	v0, err := s.PGVersions(context.Background(), 4)
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	v1, err := s.PGVersions(context.Background(), 4)
	if err != nil {
		t.Fatal(err)
	}
	if v0.Incarnation == v1.Incarnation {
		t.Errorf("incarnation %x kept across a reopen", v0.Incarnation)
	}
}

// FuzzPGIndex decodes arbitrary bytes as a PG listing key and value: never a panic, and
// what it accepts re-encodes to the same bytes.
func FuzzPGIndex(f *testing.F) {
	sh := mkShard(1, 3, 10)
	v := &indexValue{loc: location{dataLen: 10}, meta: sh.Meta}
	f.Add(appendPGKey(nil, sh.Key), appendPGValue(nil, v))
	f.Add([]byte{prefixPG}, []byte{pgValueVersion})
	f.Fuzz(func(t *testing.T, k, b []byte) {
		if key, err := parsePGKey(k); err == nil {
			if re := appendPGKey(nil, key); !slices.Equal(re, k) {
				t.Fatalf("PG key %x re-encodes to %x", k, re)
			}
		}
		meta, n, err := parsePGValue(b)
		if err != nil {
			return
		}
		re := appendPGValue(nil, &indexValue{loc: location{dataLen: int(n)}, meta: meta})
		if !slices.Equal(re, b) {
			t.Fatalf("PG value %x re-encodes to %x", b, re)
		}
	})
}
