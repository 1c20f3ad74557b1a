package coord

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/placement"
)

// putRandom stores n random chunks of least to least+spread-1 bytes and returns them and
// their IDs, in order.
func putRandom(t *testing.T, c *cluster, r *rand.Rand, n, least, spread int) ([]chunkstore.Chunk, []chunk.ID) {
	t.Helper()
	cs := make([]chunkstore.Chunk, n)
	ids := make([]chunk.ID, n)
	for i := range cs {
		cs[i] = randChunk(r, least+r.IntN(spread))
		ids[i] = cs[i].ID
	}
	mustPut(t, c.st, cs...)
	return cs, ids
}

// TestGetManyOneBatchPerNode: a healthy batch of chunks is read with one GetShards call
// per node, every chunk comes back as Get would return it, repeated IDs get equal but
// separate copies, and a missing or zero ID fails its own entry only.
func TestGetManyOneBatchPerNode(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	r := rand.New(rand.NewPCG(21, 21))
	cs, ids := putRandom(t, c, r, 80, 1, 70000)
	ids = append(ids, cs[3].ID) // repeated
	res := c.st.GetMany(context.Background(), ids)
	if len(res) != len(ids) {
		t.Fatalf("%d results for %d ids", len(res), len(ids))
	}
	for i, ch := range cs {
		if res[i].Err != nil || !bytes.Equal(res[i].Data, ch.Data) {
			t.Fatalf("chunk %d: err %v, %d bytes, want %d", i, res[i].Err, len(res[i].Data), len(ch.Data))
		}
	}
	last := res[len(res)-1]
	if last.Err != nil || !bytes.Equal(last.Data, cs[3].Data) {
		t.Fatalf("repeated id: %v", last.Err)
	}
	last.Data[0] ^= 1
	if !bytes.Equal(res[3].Data, cs[3].Data) {
		t.Fatal("a repeated id's result shares its bytes with the first")
	}
	for id, f := range c.nodes {
		if n := f.batchCalls.Load(); n != 1 {
			t.Errorf("node %s got %d batch calls, want 1", id, n)
		}
	}

	missing := randChunk(r, 10)
	res = c.st.GetMany(context.Background(), []chunk.ID{cs[0].ID, missing.ID, {}, cs[1].ID})
	if res[0].Err != nil || res[3].Err != nil {
		t.Fatalf("present chunks failed: %v, %v", res[0].Err, res[3].Err)
	}
	if !errors.Is(res[1].Err, chunkstore.ErrNotFound) {
		t.Fatalf("missing chunk: %v, want ErrNotFound", res[1].Err)
	}
	if !errors.Is(res[2].Err, chunkstore.ErrInvalid) {
		t.Fatalf("zero id: %v, want ErrInvalid", res[2].Err)
	}
}

// TestGetManyGoesAroundDamage: chunks whose batched shards are damaged, missing or on a
// down node are read again like Get, and come back right; one beyond repair fails alone.
func TestGetManyGoesAroundDamage(t *testing.T) {
	for _, kind := range []string{"corrupt", "silent"} {
		t.Run(kind, func(t *testing.T) {
			c := newCluster(t, 6, placement.DefaultProfile)
			r := rand.New(rand.NewPCG(22, 22))
			cs, ids := putRandom(t, c, r, 20, 1000, 50000)
			// One damaged data shard in chunk 0; two in chunk 1; three in chunk 2.
			for n, idx := range [][]int{{0}, {1, 3}, {0, 2, 5}} {
				for _, i := range idx {
					c.nodeOf(t, cs[n].ID, i).mark(kind, chunkstore.ShardKey{ID: cs[n].ID, Index: uint8(i)})
				}
			}
			res := c.st.GetMany(context.Background(), ids)
			for i, ch := range cs {
				if i == 2 {
					if !errors.Is(res[i].Err, chunkstore.ErrCorrupt) {
						t.Fatalf("chunk with 3 damaged shards: %v, want ErrCorrupt", res[i].Err)
					}
					continue
				}
				if res[i].Err != nil || !bytes.Equal(res[i].Data, ch.Data) {
					t.Fatalf("chunk %d: %v", i, res[i].Err)
				}
			}
		})
	}
	t.Run("down", func(t *testing.T) {
		c := newCluster(t, 6, placement.DefaultProfile)
		r := rand.New(rand.NewPCG(23, 23))
		cs, ids := putRandom(t, c, r, 20, 1000, 50000)
		c.nodes["n01"].down.Store(true)
		c.nodes["n04"].down.Store(true)
		for i, res := range c.st.GetMany(context.Background(), ids) {
			if res.Err != nil || !bytes.Equal(res.Data, cs[i].Data) {
				t.Fatalf("chunk %d with two nodes down: %v", i, res.Err)
			}
		}
	})
}

// TestGetManyHedgesAroundSilentNode: a node that answers nothing holds a batch up for
// twice the hedge delay at most; its chunks are read around it, and the next batch does
// not ask it.
func TestGetManyHedgesAroundSilentNode(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := rand.New(rand.NewPCG(24, 24))
	cs, ids := putRandom(t, c, r, 30, 1000, 20000)
	silent := c.nodes["n02"]
	silent.silentNode.Store(true)
	for i, res := range c.st.GetMany(ctx, ids) {
		if res.Err != nil || !bytes.Equal(res.Data, cs[i].Data) {
			t.Fatalf("chunk %d with a silent node: %v", i, res.Err)
		}
	}
	for silent.hanging.Load() != 0 {
		if ctx.Err() != nil {
			t.Fatal("the silent node's batch was never cancelled")
		}
		runtime.Gosched()
	}
	calls := silent.batchCalls.Load() + silent.getCalls.Load()
	for i, res := range c.st.GetMany(ctx, ids) {
		if res.Err != nil || !bytes.Equal(res.Data, cs[i].Data) {
			t.Fatalf("second batch, chunk %d: %v", i, res.Err)
		}
	}
	if n := silent.batchCalls.Load() + silent.getCalls.Load() - calls; n != 0 {
		t.Fatalf("silent node asked %d more times right after it stalled a batch", n)
	}
}

func TestGetManyCancelled(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	r := rand.New(rand.NewPCG(25, 25))
	ch := randChunk(r, 100)
	mustPut(t, c.st, ch)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, res := range c.st.GetMany(ctx, []chunk.ID{ch.ID, ch.ID}) {
		if !errors.Is(res.Err, context.Canceled) {
			t.Fatalf("cancelled GetMany: %v", res.Err)
		}
	}
}
