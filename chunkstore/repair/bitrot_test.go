package repair_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/coord"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/chunkstore/segstore"
	"github.com/cofferhq/coffer/placement"
)

// shardLoc is where one shard's data lies in a segment file.
type shardLoc struct {
	file string
	off  int64 // first data byte
	n    int
}

// locateShards parses a segment store's files (segstore FORMAT.md) and returns the data
// location of every put record.
func locateShards(t *testing.T, dir string) map[chunkstore.ShardKey]shardLoc {
	t.Helper()
	out := map[chunkstore.ShardKey]shardLoc{}
	files, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if len(files) == 0 {
		t.Fatalf("no segment files in %s", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Version 2 records: an 88-byte header (type at 5, writer length at 6, chunk ID
		// at 8, shard index at 40, data length at 52), the writer, the data.
		const hdr = 88
		off := 16
		for off+hdr <= len(b) && string(b[off:off+4]) == "CFSR" {
			w := int(binary.BigEndian.Uint16(b[off+6:]))
			d := int(binary.BigEndian.Uint32(b[off+52:]))
			var k chunkstore.ShardKey
			copy(k.ID[:], b[off+8:off+40])
			k.Index = b[off+40]
			if b[off+5] == 1 {
				out[k] = shardLoc{file: f, off: int64(off + hdr + w), n: d}
			}
			off += hdr + w + d
		}
	}
	return out
}

// flipBit inverts one random bit of the shard's data on disk.
func flipBit(t *testing.T, l shardLoc, rng *mrand.Rand) {
	t.Helper()
	f, err := os.OpenFile(l.file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pos := l.off + int64(rng.IntN(l.n))
	var b [1]byte
	if _, err := f.ReadAt(b[:], pos); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1 << rng.IntN(8)
	if _, err := f.WriteAt(b[:], pos); err != nil {
		t.Fatal(err)
	}
}

// TestDeepScrubFindsBitRot is the scrub acceptance scenario on real segment files: bits
// flipped in 1% of all shards, in exactly m shards of 50 stripes, and in m+1 shards of
// one stripe. One deep scrub finds every damaged shard and rewrites every repairable
// one; the stripe with m+1 damaged shards is named in the report and its read fails
// with ErrCorrupt; a second deep scrub finds only that stripe.
func TestDeepScrubFindsBitRot(t *testing.T) {
	const nodes, chunks = 6, 400
	ctx := context.Background()
	dirs := map[placement.NodeID]string{}
	stores := map[placement.NodeID]*segstore.Store{}
	var ns []placement.Node
	for i := range nodes {
		id := placement.NodeID(fmt.Sprintf("n%d", i))
		dirs[id] = t.TempDir()
		st, err := segstore.Open(dirs[id], segstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores[id] = st
		ns = append(ns, placement.Node{ID: id, Addr: string(id) + ":1", State: placement.StateActive})
	}
	m, err := placement.NewMap(1, 16, placement.DefaultProfile, ns)
	if err != nil {
		t.Fatal(err)
	}
	getMap := func() *placement.Map { return m }
	shards := func(n placement.Node) chunkstore.ShardStore { return stores[n.ID] }
	ds, err := coord.New(coord.Config{Principal: "test", Map: getMap, Shards: shards})
	if err != nil {
		t.Fatal(err)
	}
	data := map[chunk.ID][]byte{}
	var ids []chunk.ID
	var batch []chunkstore.Chunk
	for i := range chunks {
		var id chunk.ID
		rand.Read(id[:])
		b := make([]byte, 2000+i*13)
		rand.Read(b)
		data[id] = b
		ids = append(ids, id)
		batch = append(batch, chunkstore.Chunk{ID: id, Data: b})
	}
	if err := ds.Put(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// coord.Put returns after every node answered: all k+m shards are on disk.
	locs := map[placement.NodeID]map[chunkstore.ShardKey]shardLoc{}
	total := 0
	for id, d := range dirs {
		locs[id] = locateShards(t, d)
		total += len(locs[id])
	}
	if total != chunks*6 {
		t.Fatalf("%d shard records on disk, want %d", total, chunks*6)
	}
	owner := func(id chunk.ID, i int) placement.NodeID {
		desired, _ := m.Place(m.PG(id), 6)
		return desired[i].ID
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	damaged := map[chunkstore.ShardKey]bool{}
	rot := func(id chunk.ID, i int) {
		k := chunkstore.ShardKey{ID: id, Index: uint8(i)}
		if damaged[k] {
			return
		}
		damaged[k] = true
		flipBit(t, locs[owner(id, i)][k], rng)
	}
	// Exactly m=2 shards of each of 50 stripes.
	for _, id := range ids[:50] {
		p := rng.Perm(6)
		rot(id, p[0])
		rot(id, p[1])
	}
	// 1% of all shards, over the other stripes, never more than m in one stripe.
	perStripe := map[chunk.ID]int{}
	for n := 0; n < total/100; {
		id := ids[51+rng.IntN(chunks-51)]
		i := rng.IntN(6)
		if perStripe[id] == 2 || damaged[chunkstore.ShardKey{ID: id, Index: uint8(i)}] {
			continue
		}
		perStripe[id]++
		rot(id, i)
		n++
	}
	// m+1 shards of one stripe.
	lost := ids[50]
	for _, i := range rng.Perm(6)[:3] {
		rot(lost, i)
	}
	repairable := len(damaged) - 3
	t.Logf("%d shards, %d damaged (%d repairable)", total, len(damaged), repairable)

	var ws []*repair.Worker
	for _, n := range ns {
		w, err := repair.New(repair.Config{Self: n.ID, Map: getMap, Shards: shards, Now: time.Now})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	r := passAll(t, ws, true)
	t.Logf("deep scrub: %d stripes, %d corrupt found, %d rebuilt, unreadable %v", r.Stripes, r.Corrupt, r.Rebuilt, r.Unreadable)
	if r.Corrupt != int64(len(damaged)) {
		t.Errorf("deep scrub found %d damaged shards, want %d (100%%)", r.Corrupt, len(damaged))
	}
	if r.Rebuilt != int64(repairable) {
		t.Errorf("deep scrub rebuilt %d shards, want %d (100%%)", r.Rebuilt, repairable)
	}
	if len(r.Unreadable) != 1 || !strings.Contains(r.Unreadable[0], lost.String()) || !strings.Contains(r.Unreadable[0], "corrupt") {
		t.Errorf("unreadable stripes %v, want %s named with its corrupt shards", r.Unreadable, lost)
	}
	if _, err := ds.Get(ctx, lost); !errors.Is(err, chunkstore.ErrCorrupt) || !strings.Contains(err.Error(), lost.Str()) {
		t.Errorf("read of the lost stripe: %v, want a named ErrCorrupt", err)
	}
	for _, id := range ids {
		if id == lost {
			continue
		}
		got, err := ds.Get(ctx, id)
		if err != nil || string(got) != string(data[id]) {
			t.Fatalf("read %s after scrub: %v", id.Str(), err)
		}
		for i := range 6 {
			if _, err := stores[owner(id, i)].GetShard(ctx, chunkstore.ShardKey{ID: id, Index: uint8(i)}); err != nil {
				t.Fatalf("shard %s/%d after scrub: %v", id.Str(), i, err)
			}
		}
	}
	if r := passAll(t, ws, true); r.Corrupt != 3 || r.Rebuilt != 0 || len(r.Unreadable) != 1 {
		t.Fatalf("second deep scrub: %+v (want only the lost stripe's 3 shards)", r)
	}
}
