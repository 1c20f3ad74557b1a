package repair_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/coord"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/chunkstore/segstore"
	"github.com/cofferhq/coffer/placement"
)

// toIndexVersion2 turns the segstore index in dir into the layout before PG listing
// keys (segstore FORMAT.md, index version 2): no 'p' keys, m/version 2.
func toIndexVersion2(t *testing.T, dir string) {
	t.Helper()
	db, err := pebble.Open(filepath.Join(dir, "index"), &pebble.Options{FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	if err := errors.Join(
		b.DeleteRange([]byte{'p'}, []byte{'q'}, nil),
		b.Set([]byte("m/version"), binary.BigEndian.AppendUint32(nil, 2), nil),
		b.Commit(pebble.Sync),
		b.Close(),
		db.Close(),
	); err != nil {
		t.Fatal(err)
	}
}

func listAll(t *testing.T, s chunkstore.ShardStore) []chunkstore.ShardInfo {
	t.Helper()
	var out []chunkstore.ShardInfo
	if err := s.EnumerateShards(context.Background(), nil, func(si chunkstore.ShardInfo) error {
		out = append(out, si)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// A node whose segstore index is in the layout before PG listings (version 2) is
// upgraded when it opens: it still serves every shard it held, repair rebuilds the one it
// lost through its PG listing, and the next pass finds nothing changed.
func TestRepairOverUpgradedSegstore(t *testing.T) {
	ctx := context.Background()
	var ns []placement.Node
	for i := range 6 {
		id := placement.NodeID(fmt.Sprintf("n%02d", i))
		ns = append(ns, placement.Node{ID: id, Addr: string(id) + ":1", Domain: string(id), State: placement.StateActive})
	}
	m, err := placement.NewMap(1, 16, placement.DefaultProfile, ns)
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[placement.NodeID]string{}
	stores := map[placement.NodeID]*segstore.Store{}
	open := func(id placement.NodeID) {
		s, err := segstore.Open(dirs[id], segstore.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		stores[id] = s
	}
	for _, n := range ns {
		dirs[n.ID] = t.TempDir()
		open(n.ID)
	}
	defer func() {
		for _, s := range stores {
			s.Close()
		}
	}()
	getMap := func() *placement.Map { return m }
	shards := func(n placement.Node) chunkstore.ShardStore { return stores[n.ID] }
	co, err := coord.New(coord.Config{Principal: "test", Map: getMap, Shards: shards})
	if err != nil {
		t.Fatal(err)
	}
	data := map[chunk.ID][]byte{}
	var batch []chunkstore.Chunk
	for i := range 60 {
		var id chunk.ID
		rand.Read(id[:])
		d := make([]byte, 500+i*13)
		rand.Read(d)
		data[id] = d
		batch = append(batch, chunkstore.Chunk{ID: id, Data: d})
	}
	if err := co.Put(ctx, batch); err != nil {
		t.Fatal(err)
	}

	// One node loses a shard, then restarts with its index in the old layout.
	lostID := batch[0].ID
	desired, err := m.Place(m.PG(lostID), m.Profile.N())
	if err != nil {
		t.Fatal(err)
	}
	owner := desired[1].ID
	lost := chunkstore.ShardKey{ID: lostID, Index: 1}
	if err := stores[owner].DeleteShards(ctx, []chunkstore.ShardKey{lost}); err != nil {
		t.Fatal(err)
	}
	held := listAll(t, stores[owner])
	if err := stores[owner].Close(); err != nil {
		t.Fatal(err)
	}
	toIndexVersion2(t, dirs[owner])
	open(owner)
	if got := listAll(t, stores[owner]); !slices.Equal(got, held) {
		t.Fatalf("after the upgrade the node lists %d shards, want the %d it held", len(got), len(held))
	}
	for _, si := range held {
		if _, err := stores[owner].GetShard(ctx, si.Key); err != nil {
			t.Fatalf("after the upgrade: GetShard(%s/%d): %v", si.Key.ID.Str(), si.Key.Index, err)
		}
	}

	var ws []*repair.Worker
	var total repair.PassResult
	for _, n := range ns {
		w, err := repair.New(repair.Config{Self: n.ID, Map: getMap, Shards: shards, Now: time.Now})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
		r, err := w.Pass(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		total.PGs += r.PGs
		total.Rebuilt += r.Rebuilt + r.Copied
	}
	if total.PGs != 16 || total.Rebuilt != 1 {
		t.Fatalf("first passes: %d PGs listed, %d shards written; want 16 and 1", total.PGs, total.Rebuilt)
	}
	if has, err := stores[owner].HasShards(ctx, []chunkstore.ShardKey{lost}); err != nil || !has[0] {
		t.Fatalf("lost shard after repair: %v, %v", has, err)
	}
	for id, want := range data {
		if got, err := co.Get(ctx, id); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get(%s) after repair: %v", id.Str(), err)
		}
	}
	// The repair moved the PG's mark: the next passes list it once more, then nothing.
	for range 2 {
		for _, w := range ws {
			if _, err := w.Pass(ctx, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, w := range ws {
		r, err := w.Pass(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		if r.PGs != 0 || r.Rebuilt+r.Copied+r.Dropped != 0 {
			t.Fatalf("pass after the repair settled: %+v, want nothing listed", r)
		}
	}
}
