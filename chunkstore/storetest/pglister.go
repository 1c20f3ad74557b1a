package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
)

// runPGLister runs the chunkstore.PGLister part of the shard store suite (stores that
// implement it).
func runPGLister(t *testing.T, open func(t *testing.T) chunkstore.ShardStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, chunkstore.PGLister)
	}{
		{"EnumeratePG", testEnumeratePG},
		{"EnumeratePGAfter", testEnumeratePGAfter},
		{"EnumeratePGInvalid", testEnumeratePGInvalid},
		{"PGVersions", testPGVersions},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			pl, ok := s.(chunkstore.PGLister)
			if !ok {
				t.Skipf("%T does not implement chunkstore.PGLister", s)
			}
			tc.fn(t, pl)
		})
	}
}

// pgFixture stores 300 shards (100 chunks, indexes 0, 2 and 5) and returns their infos.
func pgFixture(t *testing.T, s chunkstore.ShardStore) []chunkstore.ShardInfo {
	t.Helper()
	var shards []chunkstore.Shard
	for n := range 100 {
		for _, idx := range []uint8{0, 2, 5} {
			shards = append(shards, testShard(n, idx, 1+n%7, 0))
		}
	}
	putShards(t, s, shards...)
	infos := make([]chunkstore.ShardInfo, len(shards))
	for i, sh := range shards {
		infos[i] = chunkstore.ShardInfo{Key: sh.Key, Meta: sh.Meta, Len: uint32(len(sh.Data))}
	}
	return infos
}

func listPG(t *testing.T, s chunkstore.PGLister, pgCount, pg uint32, after *chunkstore.ShardKey) []chunkstore.ShardInfo {
	t.Helper()
	var out []chunkstore.ShardInfo
	if err := s.EnumeratePG(context.Background(), pgCount, pg, after, func(si chunkstore.ShardInfo) error {
		out = append(out, si)
		return nil
	}); err != nil {
		t.Fatalf("EnumeratePG(%d, %d): %v", pgCount, pg, err)
	}
	return out
}

// wantPG is the infos of PG pg of pgCount after after, in PG order.
func wantPG(all []chunkstore.ShardInfo, pgCount, pg uint32, after *chunkstore.ShardKey) []chunkstore.ShardInfo {
	var out []chunkstore.ShardInfo
	for _, si := range all {
		if chunkstore.PGOf(si.Key.ID, pgCount) == pg && (after == nil || chunkstore.PGCompare(*after, si.Key) < 0) {
			out = append(out, si)
		}
	}
	slices.SortFunc(out, func(a, b chunkstore.ShardInfo) int { return chunkstore.PGCompare(a.Key, b.Key) })
	return out
}

// Every PG lists exactly its shards, in PG order, under PG counts from 1 to above the
// 65536 buckets, and the PGs of one count together list every shard once.
func testEnumeratePG(t *testing.T, s chunkstore.PGLister) {
	all := pgFixture(t, s)
	for _, pgCount := range []uint32{1, 2, 8, 256, 1 << 16, 1 << 18} {
		total := 0
		for pg := range min(pgCount, 64) {
			got, want := listPG(t, s, pgCount, pg, nil), wantPG(all, pgCount, pg, nil)
			if !slices.Equal(got, want) {
				t.Fatalf("EnumeratePG(%d, %d) = %d shards, want %d (in PG order)", pgCount, pg, len(got), len(want))
			}
			total += len(got)
		}
		// The PGs of the fixture's chunks, for counts above 64.
		if pgCount > 64 {
			seen := map[uint32]bool{}
			for _, si := range all {
				pg := chunkstore.PGOf(si.Key.ID, pgCount)
				if pg < 64 || seen[pg] {
					continue
				}
				seen[pg] = true
				got, want := listPG(t, s, pgCount, pg, nil), wantPG(all, pgCount, pg, nil)
				if !slices.Equal(got, want) {
					t.Fatalf("EnumeratePG(%d, %d) = %v, want %v", pgCount, pg, got, want)
				}
				total += len(got)
			}
		}
		if total != len(all) {
			t.Errorf("PGs of %d list %d shards in all, want %d", pgCount, total, len(all))
		}
	}
}

// A listing resumes after any key, and an error from fn stops it.
func testEnumeratePGAfter(t *testing.T, s chunkstore.PGLister) {
	all := pgFixture(t, s)
	const pgCount = 4
	for pg := range uint32(pgCount) {
		full := wantPG(all, pgCount, pg, nil)
		for _, i := range []int{0, len(full) / 2, len(full) - 1} {
			after := full[i].Key
			if got, want := listPG(t, s, pgCount, pg, &after), wantPG(all, pgCount, pg, &after); !slices.Equal(got, want) {
				t.Errorf("EnumeratePG(%d, %d) after #%d = %d shards, want %d", pgCount, pg, i, len(got), len(want))
			}
		}
		// A key of another PG as after: the listing goes on from its place in PG order.
		other := wantPG(all, pgCount, (pg+1)%pgCount, nil)[0].Key
		if got, want := listPG(t, s, pgCount, pg, &other), wantPG(all, pgCount, pg, &other); !slices.Equal(got, want) {
			t.Errorf("EnumeratePG(%d, %d) after a key of PG %d = %d shards, want %d", pgCount, pg, (pg+1)%pgCount, len(got), len(want))
		}
	}
	stop := errors.New("stop")
	calls := 0
	err := s.EnumeratePG(context.Background(), 1, 0, nil, func(chunkstore.ShardInfo) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("EnumeratePG with a failing fn: error %v after %d calls, want the callback's error after 1", err, calls)
	}
}

func testEnumeratePGInvalid(t *testing.T, s chunkstore.PGLister) {
	ctx := context.Background()
	for _, c := range [][2]uint32{{0, 0}, {3, 0}, {4, 4}, {256, 1000}} {
		err := s.EnumeratePG(ctx, c[0], c[1], nil, func(chunkstore.ShardInfo) error { return nil })
		if !errors.Is(err, chunkstore.ErrInvalid) {
			t.Errorf("EnumeratePG(%d, %d) error = %v, want ErrInvalid", c[0], c[1], err)
		}
	}
	if _, err := s.PGVersions(ctx, 6); !errors.Is(err, chunkstore.ErrInvalid) {
		t.Errorf("PGVersions(6) error = %v, want ErrInvalid", err)
	}
}

func mustVersions(t *testing.T, s chunkstore.PGLister, pgCount uint32) chunkstore.PGVersions {
	t.Helper()
	v, err := s.PGVersions(context.Background(), pgCount)
	if err != nil {
		t.Fatalf("PGVersions(%d): %v", pgCount, err)
	}
	if want := min(pgCount, chunkstore.PGBuckets); uint32(len(v.Seqs)) != want {
		t.Fatalf("PGVersions(%d) has %d marks, want %d", pgCount, len(v.Seqs), want)
	}
	return v
}

// A put or delete changes the mark of its PG and of no other; reads change nothing.
func testPGVersions(t *testing.T, s chunkstore.PGLister) {
	pgFixture(t, s)
	const pgCount = 16
	ctx := context.Background()
	v0 := mustVersions(t, s, pgCount)
	sh := testShard(1000, 1, 10, 0)
	pg := chunkstore.PGOf(sh.Key.ID, pgCount)
	changed := func(what string, before, after chunkstore.PGVersions, want uint32, changes bool) {
		t.Helper()
		if before.Incarnation != after.Incarnation {
			t.Fatalf("%s: incarnation changed", what)
		}
		for p := range uint32(pgCount) {
			if diff := before.Of(p) != after.Of(p); diff != (changes && p == want) {
				t.Errorf("%s: mark of PG %d changed = %v, want %v", what, p, diff, changes && p == want)
			}
		}
	}
	putShards(t, s, sh)
	v1 := mustVersions(t, s, pgCount)
	changed("put", v0, v1, pg, true)
	mustGet(t, s, sh.Key)
	mustHas(t, s, sh.Key)
	listPG(t, s, pgCount, pg, nil)
	v2 := mustVersions(t, s, pgCount)
	changed("reads", v1, v2, pg, false)
	if err := s.DeleteShards(ctx, []chunkstore.ShardKey{sh.Key}); err != nil {
		t.Fatal(err)
	}
	v3 := mustVersions(t, s, pgCount)
	changed("delete", v2, v3, pg, true)
}
