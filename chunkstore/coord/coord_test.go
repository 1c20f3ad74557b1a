package coord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/storetest"
	"github.com/cofferhq/coffer/placement"
)

// faultShards wraps a shard store and injects failures: a down node fails every call
// with chunkstore.ErrUnavailable; corrupt keys fail GetShard with ErrCorrupt (as a store
// whose CRC check caught damage); silent keys return flipped bytes without an error.
type faultShards struct {
	inner chunkstore.ShardStore
	down  atomic.Bool
	// full makes PutShards fail as a node whose disk is full (reads still work).
	full atomic.Bool
	// silentNode makes GetShard answer nothing until its context ends (a node that
	// died without closing its connections); hanging counts such calls in progress,
	// and GetShards batches of any node while they run.
	silentNode atomic.Bool
	hanging    atomic.Int64
	getCalls   atomic.Int64
	batchCalls atomic.Int64 // GetShards calls
	// gate, when set, holds GetShard until it is closed; onGet runs at each GetShard.
	gate  chan struct{}
	onGet func()
	puts  atomic.Int64
	// seenAlive is the failure detector's view (Config.Alive).
	seenAlive atomic.Bool
	// inflight and peak count concurrent PutShards calls across all nodes sharing
	// the counters.
	inflight, peak *atomic.Int64
	mu             struct {
		sync.Mutex
		corrupt, silent map[chunkstore.ShardKey]bool
	}
}

func newFault() *faultShards {
	f := &faultShards{inner: memstore.NewShards()}
	f.mu.corrupt = map[chunkstore.ShardKey]bool{}
	f.mu.silent = map[chunkstore.ShardKey]bool{}
	return f
}

var errDown = fmt.Errorf("fault: connection refused: %w", chunkstore.ErrUnavailable)

var errFull = fmt.Errorf("fault: put shards: %w: write seg-1: no space left on device", chunkstore.ErrNoSpace)

func (f *faultShards) PutShards(ctx context.Context, s []chunkstore.Shard) error {
	f.puts.Add(1)
	if f.inflight != nil {
		n := f.inflight.Add(1)
		defer f.inflight.Add(-1)
		for p := f.peak.Load(); n > p && !f.peak.CompareAndSwap(p, n); p = f.peak.Load() {
		}
		runtime.Gosched() // give other calls a chance to overlap
	}
	if f.down.Load() {
		return errDown
	}
	if f.full.Load() {
		return errFull
	}
	return f.inner.PutShards(ctx, s)
}

func (f *faultShards) GetShard(ctx context.Context, k chunkstore.ShardKey) (chunkstore.Shard, error) {
	f.getCalls.Add(1)
	if f.onGet != nil {
		f.onGet()
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return chunkstore.Shard{}, ctx.Err()
		}
	}
	if f.silentNode.Load() {
		f.hanging.Add(1)
		defer f.hanging.Add(-1)
		<-ctx.Done()
		return chunkstore.Shard{}, ctx.Err()
	}
	if f.down.Load() {
		return chunkstore.Shard{}, errDown
	}
	f.mu.Lock()
	corrupt, silent := f.mu.corrupt[k], f.mu.silent[k]
	f.mu.Unlock()
	if corrupt {
		return chunkstore.Shard{}, fmt.Errorf("fault: shard %s/%d: crc mismatch: %w", k.ID.Str(), k.Index, chunkstore.ErrCorrupt)
	}
	sh, err := f.inner.GetShard(ctx, k)
	if err == nil && silent {
		sh.Data[len(sh.Data)/2] ^= 0x5a
	}
	return sh, err
}

// GetShards counts one batch call and reads the keys with GetShard. The whole batch
// counts as hanging, not only its key being read: between two keys of a stalled batch
// the node is still busy with it, and its later keys still count as calls.
func (f *faultShards) GetShards(ctx context.Context, keys []chunkstore.ShardKey) []chunkstore.ShardResult {
	f.batchCalls.Add(1)
	f.hanging.Add(1)
	defer f.hanging.Add(-1)
	out := make([]chunkstore.ShardResult, len(keys))
	for i, k := range keys {
		out[i].Shard, out[i].Err = f.GetShard(ctx, k)
	}
	return out
}

func (f *faultShards) HasShards(ctx context.Context, k []chunkstore.ShardKey) ([]bool, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.inner.HasShards(ctx, k)
}

func (f *faultShards) DeleteShards(ctx context.Context, k []chunkstore.ShardKey) error {
	return f.inner.DeleteShards(ctx, k)
}

func (f *faultShards) EnumerateShards(ctx context.Context, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	return f.inner.EnumerateShards(ctx, after, fn)
}

func (f *faultShards) Stats(ctx context.Context) (chunkstore.ShardStats, error) {
	return f.inner.Stats(ctx)
}

func (f *faultShards) mark(set string, k chunkstore.ShardKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if set == "corrupt" {
		f.mu.corrupt[k] = true
	} else {
		f.mu.silent[k] = true
	}
}

type cluster struct {
	m     atomic.Pointer[placement.Map]
	nodes map[placement.NodeID]*faultShards
	st    *Store
}

func newCluster(t testing.TB, n int, p placement.Profile) *cluster {
	t.Helper()
	var ns []placement.Node
	c := &cluster{nodes: map[placement.NodeID]*faultShards{}}
	for i := range n {
		id := placement.NodeID(fmt.Sprintf("n%02d", i))
		ns = append(ns, placement.Node{ID: id, Addr: fmt.Sprintf("127.0.0.1:%d", 7000+i), Domain: fmt.Sprintf("host%d", i), State: placement.StateActive})
		c.nodes[id] = newFault()
	}
	m, err := placement.NewMap(1, 64, p, ns)
	if err != nil {
		t.Fatal(err)
	}
	c.m.Store(m)
	c.st, err = New(Config{
		Principal: "tester",
		Map:       c.m.Load,
		Shards: func(n placement.Node) chunkstore.ShardStore {
			if f := c.nodes[n.ID]; f != nil {
				return f
			}
			return nil
		},
		Alive: func(id placement.NodeID) bool {
			f := c.nodes[id]
			return f != nil && f.seenAlive.Load()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nodeOf returns the fault store holding shard i of id.
func (c *cluster) nodeOf(t testing.TB, id chunk.ID, i int) *faultShards {
	t.Helper()
	nodes, err := c.st.Locate(id)
	if err != nil {
		t.Fatal(err)
	}
	return c.nodes[nodes[i].ID]
}

func (c *cluster) setState(t *testing.T, id placement.NodeID, st placement.State) {
	t.Helper()
	m := c.m.Load().Clone()
	for i := range m.Nodes {
		if m.Nodes[i].ID == id {
			m.Nodes[i].State = st
		}
	}
	m.Epoch++
	c.m.Store(m)
}

func randChunk(r *rand.Rand, size int) chunkstore.Chunk {
	var id chunk.ID
	var seed [32]byte
	for i := range id {
		id[i] = byte(r.Uint32())
		seed[i] = byte(r.Uint32())
	}
	data := make([]byte, size)
	_, _ = rand.NewChaCha8(seed).Read(data) // never fails
	return chunkstore.Chunk{ID: id, Data: data}
}

func mustPut(t *testing.T, s chunkstore.Store, cs ...chunkstore.Chunk) {
	t.Helper()
	if err := s.Put(context.Background(), cs); err != nil {
		t.Fatalf("Put: %v", err)
	}
}

func mustGet(t *testing.T, s chunkstore.Store, c chunkstore.Chunk) {
	t.Helper()
	got, err := s.Get(context.Background(), c.ID)
	if err != nil {
		t.Fatalf("Get(%s): %v", c.ID.Str(), err)
	}
	if !bytes.Equal(got, c.Data) {
		t.Fatalf("Get(%s): %d bytes differ from the %d put", c.ID.Str(), len(got), len(c.Data))
	}
}

func mustHas(t *testing.T, s chunkstore.Store, ids ...chunk.ID) []bool {
	t.Helper()
	got, err := s.Has(context.Background(), ids)
	if err != nil {
		t.Fatalf("Has: %v", err)
	}
	return got
}

func TestStoreConformance(t *testing.T) {
	storetest.RunStore(t, func(t *testing.T) chunkstore.Store {
		return newCluster(t, 6, placement.DefaultProfile).st
	})
}

func TestRoundTripRandom(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	r := rand.New(rand.NewPCG(1, 2))
	const maxSize = 5 << 20
	var all []chunkstore.Chunk
	for i := range 200 {
		// Log-uniform sizes from 1 B to 1 MiB, plus a few up to 5 MiB and both ends
		// (bounded total keeps the test fast under -race).
		size := int(math.Exp(r.Float64() * math.Log(1<<20)))
		switch i {
		case 0:
			size = 1
		case 1:
			size = maxSize
		case 50, 100:
			size = 1<<20 + r.IntN(maxSize-1<<20)
		}
		all = append(all, randChunk(r, max(size, 1)))
	}
	for i := 0; i < len(all); i += 25 {
		mustPut(t, c.st, all[i:i+25]...)
	}
	for _, ch := range all {
		mustGet(t, c.st, ch)
	}
	ids := make([]chunk.ID, len(all))
	for i := range all {
		ids[i] = all[i].ID
	}
	for i, ok := range mustHas(t, c.st, ids...) {
		if !ok {
			t.Fatalf("Has(%s) = false after Put", ids[i].Str())
		}
	}
}

func TestShardsLandOnDistinctNodes(t *testing.T) {
	c := newCluster(t, 8, placement.DefaultProfile)
	ch := randChunk(rand.New(rand.NewPCG(3, 3)), 10007)
	mustPut(t, c.st, ch)
	nodes, err := c.st.Locate(ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	placed := map[placement.NodeID]int{}
	for i, nd := range nodes {
		placed[nd.ID] = i
	}
	if len(placed) != 6 {
		t.Fatalf("6 shards placed on %d distinct nodes", len(placed))
	}
	ctx := context.Background()
	for id, f := range c.nodes {
		var got []chunkstore.ShardInfo
		if err := f.EnumerateShards(ctx, nil, func(si chunkstore.ShardInfo) error { got = append(got, si); return nil }); err != nil {
			t.Fatal(err)
		}
		i, want := placed[id]
		if !want {
			if len(got) != 0 {
				t.Fatalf("node %s holds %d shards of a chunk not placed on it", id, len(got))
			}
			continue
		}
		if len(got) != 1 || got[0].Key != (chunkstore.ShardKey{ID: ch.ID, Index: uint8(i)}) {
			t.Fatalf("node %s holds %v, want shard %d", id, got, i)
		}
		mt := got[0].Meta
		if mt.K != 4 || mt.M != 2 || mt.ChunkLen != 10007 || mt.Writer != "tester" || got[0].Len != 2502 {
			t.Fatalf("node %s: shard meta %+v len %d", id, mt, got[0].Len)
		}
		if mt.ChunkCRC != c.st.crc(ch.Data) {
			t.Fatalf("node %s: chunk crc %08x", id, mt.ChunkCRC)
		}
	}
}

func TestOnePutShardsPerNode(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	r := rand.New(rand.NewPCG(4, 4))
	var cs []chunkstore.Chunk
	for range 50 {
		cs = append(cs, randChunk(r, 1+r.IntN(3000)))
	}
	mustPut(t, c.st, cs...)
	for id, f := range c.nodes {
		if n := f.puts.Load(); n != 1 {
			t.Errorf("node %s got %d PutShards calls, want 1", id, n)
		}
		st, _ := f.Stats(context.Background())
		if st.Shards != 50 {
			t.Errorf("node %s holds %d shards, want 50 (6 nodes, 4+2)", id, st.Shards)
		}
	}
}

func TestNodesDown(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	r := rand.New(rand.NewPCG(5, 5))
	var old []chunkstore.Chunk
	for range 20 {
		old = append(old, randChunk(r, 1+r.IntN(100000)))
	}
	mustPut(t, c.st, old...)

	c.nodes["n01"].down.Store(true)
	one := randChunk(r, 5000)
	mustPut(t, c.st, one) // 5 of 6 up: the write quorum holds
	mustGet(t, c.st, one)
	if got := mustHas(t, c.st, one.ID); !got[0] {
		t.Fatal("Has = false for a chunk on 5 of 6 nodes")
	}

	c.nodes["n04"].down.Store(true)
	for _, ch := range old {
		mustGet(t, c.st, ch)
	}
	mustGet(t, c.st, one)
	fresh := randChunk(r, 5000)
	err := c.st.Put(context.Background(), []chunkstore.Chunk{fresh})
	if !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("Put with 2 of 6 nodes down = %v, want ErrUnavailable", err)
	}
	for _, want := range []string{fresh.ID.Str(), "2 of 6 shards failed, need 5 ok", "n01", "n04"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// The partial stripe (4 shards) is not durable for Has.
	if got := mustHas(t, c.st, fresh.ID, one.ID); got[0] || got[1] {
		t.Fatalf("Has = %v with 2 nodes down, want [false false]: 4 reachable shards < quorum 5", got)
	}
	// A third node down: reads fail with ErrUnavailable and name the counts.
	c.nodes["n00"].down.Store(true)
	_, err = c.st.Get(context.Background(), old[0].ID)
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "3 of 6 shards usable, need 4") {
		t.Fatalf("Get with 3 nodes down = %v", err)
	}
	// Recovery: nodes back, the interrupted chunk is put again and completes.
	for _, f := range c.nodes {
		f.down.Store(false)
	}
	mustPut(t, c.st, fresh)
	mustGet(t, c.st, fresh)
}

func TestMapStateDown(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	r := rand.New(rand.NewPCG(6, 6))
	before := randChunk(r, 70000)
	mustPut(t, c.st, before)
	c.setState(t, "n02", placement.StateDown)
	c.nodes["n02"].puts.Store(0)
	after := randChunk(r, 70000)
	mustPut(t, c.st, after)
	if n := c.nodes["n02"].puts.Load(); n != 0 {
		t.Fatalf("a node marked down got %d PutShards calls", n)
	}
	mustGet(t, c.st, before)
	mustGet(t, c.st, after)
	if got := mustHas(t, c.st, before.ID, after.ID); !got[0] || !got[1] {
		t.Fatalf("Has = %v", got)
	}
}

func TestCorruptShards(t *testing.T) {
	for _, kind := range []string{"corrupt", "silent"} {
		t.Run(kind, func(t *testing.T) {
			c := newCluster(t, 6, placement.DefaultProfile)
			r := rand.New(rand.NewPCG(7, 7))
			ch := randChunk(r, 123457)
			mustPut(t, c.st, ch)
			// Damage two data shards: the read must go around them.
			for _, i := range []int{0, 2} {
				c.nodeOf(t, ch.ID, i).mark(kind, chunkstore.ShardKey{ID: ch.ID, Index: uint8(i)})
			}
			mustGet(t, c.st, ch)
			// A third damaged shard exceeds the redundancy.
			c.nodeOf(t, ch.ID, 5).mark(kind, chunkstore.ShardKey{ID: ch.ID, Index: 5})
			_, err := c.st.Get(context.Background(), ch.ID)
			if !errors.Is(err, chunkstore.ErrCorrupt) {
				t.Fatalf("Get with 3 damaged shards = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), ch.ID.Str()) {
				t.Fatalf("error %q does not name the chunk", err)
			}
		})
	}
}

func TestGetMissing(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	r := rand.New(rand.NewPCG(8, 8))
	missing := randChunk(r, 10)
	_, err := c.st.Get(context.Background(), missing.ID)
	if !errors.Is(err, chunkstore.ErrNotFound) || !strings.Contains(err.Error(), "not found 6") {
		t.Fatalf("Get(missing) = %v, want ErrNotFound naming counts", err)
	}
	// Not found on reachable nodes but some unreachable: it may exist, so unavailable.
	c.nodeOf(t, missing.ID, 1).down.Store(true)
	if _, err := c.st.Get(context.Background(), missing.ID); !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("Get(missing, one node down) = %v, want ErrUnavailable", err)
	}
	if _, err := c.st.Get(context.Background(), chunk.ID{}); !errors.Is(err, chunkstore.ErrInvalid) {
		t.Fatalf("Get(zero) = %v", err)
	}
}

func TestFirstWriteWins(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	r := rand.New(rand.NewPCG(9, 9))
	a := randChunk(r, 3000)
	b := chunkstore.Chunk{ID: a.ID, Data: randChunk(r, 9000).Data}
	mustPut(t, c.st, a)
	mustPut(t, c.st, b)
	mustGet(t, c.st, a)
	x := randChunk(r, 500)
	y := chunkstore.Chunk{ID: x.ID, Data: randChunk(r, 700).Data}
	mustPut(t, c.st, x, y)
	mustGet(t, c.st, x)

	// A second writer that finds part of the stripe written keeps the first writer's
	// shards; the chunk still reads as the first data.
	p := randChunk(r, 4000)
	q := chunkstore.Chunk{ID: p.ID, Data: randChunk(r, 4000).Data}
	down := []*faultShards{c.nodeOf(t, p.ID, 4), c.nodeOf(t, p.ID, 5)}
	for _, f := range down {
		f.down.Store(true)
	}
	if err := c.st.Put(context.Background(), []chunkstore.Chunk{p}); !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("partial Put = %v", err)
	}
	for _, f := range down {
		f.down.Store(false)
	}
	mustPut(t, c.st, q)
	mustGet(t, c.st, p)
}

func TestHasQuorum(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	r := rand.New(rand.NewPCG(10, 10))
	a, b := randChunk(r, 4000), randChunk(r, 4000)
	mustPut(t, c.st, a, b)
	ctx := context.Background()
	// Remove shards of a until only k+1, then k, remain.
	for _, i := range []int{1} {
		if err := c.nodeOf(t, a.ID, i).DeleteShards(ctx, []chunkstore.ShardKey{{ID: a.ID, Index: uint8(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	missing := randChunk(r, 10).ID
	if got := mustHas(t, c.st, a.ID, missing, b.ID, a.ID); !slices.Equal(got, []bool{true, false, true, true}) {
		t.Fatalf("Has with k+1 shards = %v", got)
	}
	if err := c.nodeOf(t, a.ID, 3).DeleteShards(ctx, []chunkstore.ShardKey{{ID: a.ID, Index: 3}}); err != nil {
		t.Fatal(err)
	}
	if got := mustHas(t, c.st, a.ID, b.ID); !slices.Equal(got, []bool{false, true}) {
		t.Fatalf("Has with k shards = %v, want [false true]", got)
	}
	mustGet(t, c.st, a) // still readable from k shards
	if got := mustHas(t, c.st); len(got) != 0 {
		t.Fatalf("Has() = %v", got)
	}
	if _, err := c.st.Has(ctx, []chunk.ID{b.ID, {}}); !errors.Is(err, chunkstore.ErrInvalid) {
		t.Fatalf("Has(zero id) = %v", err)
	}
}

func TestInvalidPutChangesNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	good := randChunk(r, 100)
	for name, bad := range map[string]chunkstore.Chunk{
		"empty":    {ID: randChunk(r, 1).ID},
		"oversize": {ID: randChunk(r, 1).ID, Data: make([]byte, chunkstore.MaxChunkSize+1)},
		"zero id":  {Data: []byte("x")},
	} {
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, 6, placement.DefaultProfile)
			err := c.st.Put(context.Background(), []chunkstore.Chunk{good, bad})
			if !errors.Is(err, chunkstore.ErrInvalid) || !strings.Contains(err.Error(), "chunk 1") {
				t.Fatalf("Put = %v, want ErrInvalid naming chunk 1", err)
			}
			for id, f := range c.nodes {
				if st, _ := f.Stats(context.Background()); st.Shards != 0 || f.puts.Load() != 0 {
					t.Fatalf("node %s: %d shards, %d puts after a rejected batch", id, st.Shards, f.puts.Load())
				}
			}
		})
	}
}

// TestNotEnoughNodes: 4 nodes cannot take a 4+2 stripe (the quorum is 5 distinct
// nodes); Put writes nothing durable it acknowledges and says why. (5 nodes can:
// TestPutShortPlacement.)
func TestNotEnoughNodes(t *testing.T) {
	c := newCluster(t, 4, placement.DefaultProfile)
	ch := randChunk(rand.New(rand.NewPCG(12, 12)), 100)
	err := c.st.Put(context.Background(), []chunkstore.Chunk{ch})
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "4 chunk nodes; 4+2 needs 5 live nodes") {
		t.Fatalf("Put on 4 nodes for 4+2 = %v", err)
	}
	if got := mustHas(t, c.st, ch.ID); got[0] {
		t.Fatal("Has = true for a chunk short of quorum")
	}
	empty := newCluster(t, 0, placement.DefaultProfile)
	if err := empty.st.Put(context.Background(), []chunkstore.Chunk{ch}); !errors.Is(err, chunkstore.ErrUnavailable) || !errors.Is(err, placement.ErrNotEnoughNodes) {
		t.Fatalf("Put on an empty map = %v", err)
	}
}

func TestProfiles(t *testing.T) {
	for _, p := range []placement.Profile{{K: 8, M: 3}, {K: 1, M: 2}, {K: 3, M: 0}} {
		t.Run(p.String(), func(t *testing.T) {
			c := newCluster(t, p.N()+1, p)
			r := rand.New(rand.NewPCG(13, 13))
			var cs []chunkstore.Chunk
			for range 10 {
				cs = append(cs, randChunk(r, 1+r.IntN(50000)))
			}
			mustPut(t, c.st, cs...)
			for _, ch := range cs {
				mustGet(t, c.st, ch)
			}
			// Lose m shards of the first chunk.
			for i := range p.M {
				c.nodeOf(t, cs[0].ID, i).mark("corrupt", chunkstore.ShardKey{ID: cs[0].ID, Index: uint8(i)})
			}
			mustGet(t, c.st, cs[0])
		})
	}
}

func TestNew(t *testing.T) {
	m := func() *placement.Map { return nil }
	sh := func(placement.Node) chunkstore.ShardStore { return nil }
	for name, cfg := range map[string]Config{
		"no map":          {Shards: sh},
		"no shards":       {Map: m},
		"negative limits": {Map: m, Shards: sh, MaxParallel: -1},
		"long principal":  {Map: m, Shards: sh, Principal: strings.Repeat("p", 1<<16)},
	} {
		if _, err := New(cfg); !errors.Is(err, chunkstore.ErrInvalid) {
			t.Errorf("%s: New = %v", name, err)
		}
	}
	st, err := New(Config{Map: m, Shards: sh})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(context.Background(), randChunk(rand.New(rand.NewPCG(1, 1)), 1).ID); !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("Get without a map = %v", err)
	}
}

func TestMaxParallel(t *testing.T) {
	c := newCluster(t, 12, placement.Profile{K: 8, M: 3})
	var inflight, peak atomic.Int64
	for _, f := range c.nodes {
		f.inflight, f.peak = &inflight, &peak
	}
	st, err := New(Config{Map: c.m.Load, Shards: c.st.cfg.Shards, MaxParallel: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(14, 14))
	for range 20 {
		var cs []chunkstore.Chunk
		for range 8 {
			cs = append(cs, randChunk(r, 1000))
		}
		mustPut(t, st, cs...)
	}
	if p := peak.Load(); p > 2 || p < 1 {
		t.Fatalf("peak concurrent PutShards = %d, want 1..2", p)
	}
}

func TestCancelled(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	ch := randChunk(rand.New(rand.NewPCG(15, 15)), 100)
	mustPut(t, c.st, ch)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.st.Put(ctx, []chunkstore.Chunk{randChunk(rand.New(rand.NewPCG(16, 16)), 100)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put = %v", err)
	}
	if _, err := c.st.Get(ctx, ch.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get = %v", err)
	}
	if _, err := c.st.Has(ctx, []chunk.ID{ch.ID}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Has = %v", err)
	}
}

func benchCluster(b *testing.B) (*cluster, []chunkstore.Chunk) {
	c := newCluster(b, 6, placement.DefaultProfile)
	r := rand.New(rand.NewPCG(20, 20))
	cs := make([]chunkstore.Chunk, 64)
	for i := range cs {
		cs[i] = randChunk(r, 1<<20)
	}
	return c, cs
}

func BenchmarkPut1MiB(b *testing.B) {
	c, cs := benchCluster(b)
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// Fresh IDs so every Put stores a new stripe.
		ch := cs[i%len(cs)]
		ch.ID[31], ch.ID[30] = byte(i), byte(i>>8)
		ch.ID[29] = byte(i >> 16)
		i++
		if err := c.st.Put(context.Background(), []chunkstore.Chunk{ch}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet1MiB(b *testing.B) {
	c, cs := benchCluster(b)
	if err := c.st.Put(context.Background(), cs); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.st.Get(context.Background(), cs[i%len(cs)].ID); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestGetHedgesAroundSilentNode: a node that holds a data shard but never answers does
// not stall Get: after HedgeDelay another shard is read, the chunk comes back intact,
// and the silent read is cancelled when Get returns.
func TestGetHedgesAroundSilentNode(t *testing.T) {
	c := newCluster(t, 6, placement.Profile{K: 4, M: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := rand.New(rand.NewPCG(5, 5))
	ch := randChunk(r, 300<<10)
	if err := c.st.Put(ctx, []chunkstore.Chunk{ch}); err != nil {
		t.Fatal(err)
	}
	silent := c.nodeOf(t, ch.ID, 1) // a data shard: read first
	silent.silentNode.Store(true)
	got, err := c.st.Get(ctx, ch.ID)
	if err != nil || !bytes.Equal(got, ch.Data) {
		t.Fatalf("get with a silent node: %v", err)
	}
	for silent.hanging.Load() != 0 {
		if ctx.Err() != nil {
			t.Fatal("the silent read was never cancelled")
		}
		runtime.Gosched()
	}
	// The silent node is now read last: the next Get does not wait on it.
	calls := silent.getCalls.Load()
	if got, err := c.st.Get(ctx, ch.ID); err != nil || !bytes.Equal(got, ch.Data) {
		t.Fatalf("second get: %v", err)
	}
	if n := silent.getCalls.Load() - calls; n != 0 {
		t.Fatalf("silent node asked again %d times right after it stalled a read", n)
	}
}

// TestGetReadsNodesTheMapStillMarksDown: the map lags a node that has come back; when
// the other nodes cannot supply k shards, Get still asks the nodes the map marks down.
func TestGetReadsNodesTheMapStillMarksDown(t *testing.T) {
	c := newCluster(t, 6, placement.Profile{K: 4, M: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch := randChunk(rand.New(rand.NewPCG(6, 6)), 200<<10)
	if err := c.st.Put(ctx, []chunkstore.Chunk{ch}); err != nil {
		t.Fatal(err)
	}
	nodes, err := c.st.Locate(ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	c.setState(t, nodes[0].ID, placement.StateDown) // back, but the map does not know yet
	c.setState(t, nodes[1].ID, placement.StateDown)
	c.nodes[nodes[2].ID].down.Store(true) // really unreachable
	got, err := c.st.Get(ctx, ch.ID)
	if err != nil || !bytes.Equal(got, ch.Data) {
		t.Fatalf("get with two map-down but live nodes and one dead: %v", err)
	}
}

// TestWritesGoToNodesBackBeforeTheMap: after a whole-cluster restart the map still
// marks every node down until the leader's next tick. Writes and existence checks skip
// map-down nodes, unless the failure detector reports them alive; then the nodes are
// used in their own positions, so nothing moves when the map catches up.
func TestWritesGoToNodesBackBeforeTheMap(t *testing.T) {
	c := newCluster(t, 6, placement.Profile{K: 4, M: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := rand.New(rand.NewPCG(8, 8))
	before := randChunk(r, 100<<10)
	mustPut(t, c.st, before)
	for id := range c.nodes {
		c.setState(t, id, placement.StateDown)
	}
	ch := randChunk(r, 100<<10)
	err := c.st.Put(ctx, []chunkstore.Chunk{ch})
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "is down") {
		t.Fatalf("put with every node down and none seen alive = %v, want ErrUnavailable naming a down node", err)
	}
	if got := mustHas(t, c.st, before.ID); got[0] {
		t.Fatal("Has reports a chunk held with every node down and none seen alive")
	}
	for _, f := range c.nodes {
		f.seenAlive.Store(true)
		f.puts.Store(0)
	}
	mustPut(t, c.st, ch)
	if got := mustHas(t, c.st, before.ID, ch.ID); !got[0] || !got[1] {
		t.Fatalf("Has with every node seen alive = %v, want both held", got)
	}
	nodes, err := c.st.Locate(ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i, nd := range nodes {
		if _, err := c.nodes[nd.ID].inner.GetShard(ctx, chunkstore.ShardKey{ID: ch.ID, Index: uint8(i)}); err != nil {
			t.Fatalf("shard %d not on its placed node %s: %v", i, nd.ID, err)
		}
	}
	// A node the detector holds failed again is skipped once more.
	dead := nodes[0].ID
	c.nodes[dead].seenAlive.Store(false)
	c.nodes[dead].puts.Store(0)
	mustPut(t, c.st, randChunk(r, 100<<10), randChunk(r, 100<<10))
	if n := c.nodes[dead].puts.Load(); n != 0 {
		t.Fatalf("a map-down node the detector holds failed got %d PutShards calls", n)
	}
}

// TestGetKeepsSlowReadsForLaterRounds: a read that was still running when k other
// shards came back is not written off. Here one shard is slow, one silently wrong and
// one unreachable, so the slow shard is needed once the first k fail their CRC.
func TestGetKeepsSlowReadsForLaterRounds(t *testing.T) {
	c := newCluster(t, 6, placement.Profile{K: 4, M: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch := randChunk(rand.New(rand.NewPCG(7, 7)), 256<<10)
	if err := c.st.Put(ctx, []chunkstore.Chunk{ch}); err != nil {
		t.Fatal(err)
	}
	slow, wrong, dead := c.nodeOf(t, ch.ID, 1), c.nodeOf(t, ch.ID, 4), c.nodeOf(t, ch.ID, 5)
	wrong.mark("silent", chunkstore.ShardKey{ID: ch.ID, Index: 4})
	dead.down.Store(true)
	// The slow read answers only once the CRC check of the first k shards (0, 2, 3 and
	// the hedged 4) has failed and the last shard is asked for.
	gate := make(chan struct{})
	var once sync.Once
	slow.gate = gate
	dead.onGet = func() { once.Do(func() { close(gate) }) }
	got, err := c.st.Get(ctx, ch.ID)
	if err != nil || !bytes.Equal(got, ch.Data) {
		t.Fatalf("get: %v", err)
	}
}
