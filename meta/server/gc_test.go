package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/coord"
	"github.com/cofferhq/coffer/chunkstore/gcnode"
	"github.com/cofferhq/coffer/chunkstore/gcorder"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	sha256 "github.com/minio/sha256-simd"
)

// gcWorld is a meta server over six in-memory chunk nodes that keep touch times on a
// clock the test moves by hand, with real GC nodes (gcnode) checking every order
// against the leader.
type gcWorld struct {
	t      *testing.T
	c      *cluster
	now    atomic.Int64 // chunk nodes' clock, Unix nanoseconds
	shards map[placement.NodeID]*memstore.Shards
	gcn    map[placement.NodeID]*gcnode.Node
	m      *placement.Map
	store  *coord.Store
	grace  time.Duration
	// refused counts orders the chunk nodes refused.
	refused atomic.Int64
}

func newGCWorld(t *testing.T) *gcWorld {
	w := &gcWorld{t: t, shards: map[placement.NodeID]*memstore.Shards{}, gcn: map[placement.NodeID]*gcnode.Node{}, grace: 10 * time.Minute}
	w.now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, w.now.Load()) }
	m := &placement.Map{Epoch: 1, PGCount: 16, Profile: placement.DefaultProfile}
	for i := range 6 {
		id := placement.NodeID(fmt.Sprintf("c%d", i+1))
		m.Nodes = append(m.Nodes, placement.Node{ID: id, Addr: string(id) + ":1", Domain: string(id), State: placement.StateActive})
		w.shards[id] = memstore.NewShards(memstore.WithClock(clock))
	}
	w.m = m
	var err error
	w.store, err = coord.New(coord.Config{Map: func() *placement.Map { return w.m }, Shards: func(n placement.Node) chunkstore.ShardStore { return w.shards[n.ID] }, HedgeDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	for id, st := range w.shards {
		n, err := gcnode.New(gcnode.Config{Store: st, Now: clock,
			Authorize: func(ctx context.Context, from, op string, epoch uint64) error {
				l := w.c.srv[w.c.leader()]
				st, err := l.GCStatus(ctx)
				if err != nil {
					return err
				}
				return gcorder.Check(st.Order(), from, op, epoch)
			},
			Refused: func(context.Context, string, string, uint64, error) { w.refused.Add(1) },
		})
		if err != nil {
			t.Fatal(err)
		}
		w.gcn[id] = n
	}
	w.c = newCluster(t, 1, func(cfg *Config) {
		cfg.Chunks = w.store
		cfg.InitialMap = m
		cfg.GCGrace = w.grace
		from := cfg.ID
		cfg.GCPeer = func(n placement.Node) meta.GCPeer { return w.gcn[n.ID].Peer(from) }
	})
	return w
}

func (w *gcWorld) advance(d time.Duration) { w.now.Add(int64(d)) }

// pool is the shared data agents back up (overlapping content).
type pool struct {
	chunks []chunkstore.Chunk
}

func newPool(rng *rand.Rand, n int) *pool {
	p := &pool{}
	for range n {
		data := make([]byte, 64+rng.IntN(960))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		p.chunks = append(p.chunks, chunkstore.Chunk{ID: chunk.ID(sha256.Sum256(data)), Data: data})
	}
	return p
}

func uniqueChunk(rng *rand.Rand) chunkstore.Chunk {
	data := make([]byte, 200)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return chunkstore.Chunk{ID: chunk.ID(sha256.Sum256(data)), Data: data}
}

// agentRun is what one simulated backup did.
type agentRun struct {
	snap     meta.Snapshot
	refusals int   // commits refused for missing chunks
	err      error // final error
}

// backup plays an agent: ask which chunks exist (touching them), upload the rest and the
// reference list, optionally pause, commit; on a refusal for missing chunks, ask again,
// re-upload and retry, like client.Agent does.
func (w *gcWorld) backup(ctx context.Context, l *Server, vault meta.VaultID, chunks []chunkstore.Chunk, parent *meta.SnapshotID, pause func()) agentRun {
	ids := make([]chunk.ID, len(chunks))
	for i, c := range chunks {
		ids[i] = c.ID
	}
	tree := chunks[len(chunks)-1].ID
	refs := reflist.Encode(ids)
	all := slices.Clone(chunks)
	for _, c := range refs {
		all = append(all, chunkstore.Chunk(c))
	}
	var run agentRun
	var sid chunk.ID
	sid[0], sid[1] = byte(len(chunks)), 1
	copy(sid[2:], tree[:30])
	for attempt := 0; attempt < 4; attempt++ {
		allIDs := make([]chunk.ID, len(all))
		for i, c := range all {
			allIDs[i] = c.ID
		}
		have, err := w.store.Has(ctx, allIDs)
		if err != nil {
			run.err = err
			return run
		}
		var missing []chunkstore.Chunk
		for i, ok := range have {
			if !ok {
				missing = append(missing, all[i])
			}
		}
		if err := w.store.Put(ctx, missing); err != nil {
			run.err = err
			return run
		}
		if pause != nil && attempt == 0 {
			pause()
		}
		refIDs := make([]chunk.ID, len(refs))
		for i, r := range refs {
			refIDs[i] = r.ID
		}
		snap, err := l.CommitSnapshot(ctx, meta.Snapshot{ID: sid, Vault: vault, Host: "h", Paths: []string{"/"}, Start: time.Now(), Tree: tree, Refs: refIDs, Parent: parent})
		if errors.Is(err, meta.ErrMissingChunks) {
			run.refusals++
			continue
		}
		run.snap, run.err = snap, err
		return run
	}
	run.err = fmt.Errorf("still refused after %d attempts", run.refusals)
	return run
}

// shardsOf counts the stored shards of id across nodes without touching them.
func (w *gcWorld) shardsOf(ctx context.Context, id chunk.ID) int {
	n := 0
	for i := range w.m.Nodes {
		for idx := range placement.DefaultProfile.K + placement.DefaultProfile.M {
			has, err := w.shards[w.m.Nodes[i].ID].HasShards(ctx, []chunkstore.ShardKey{{ID: id, Index: uint8(idx)}})
			if err == nil && has[0] {
				n++
			}
		}
	}
	return n
}

// referenced returns every chunk ID the committed snapshots need, read from the FSM and
// the reference lists.
func (w *gcWorld) referenced(ctx context.Context, l *Server, vault meta.VaultID) map[chunk.ID]struct{} {
	w.t.Helper()
	snaps, err := l.fsm.Snapshots(vault)
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[chunk.ID]struct{}{}
	for _, s := range snaps {
		for _, r := range s.Refs {
			out[r] = struct{}{}
			data, err := w.store.Get(ctx, r)
			if err != nil {
				w.t.Fatalf("snapshot %s: reference list %s: %v", s.ID.Str(), r.Str(), err)
			}
			ids, err := reflist.Decode(data)
			if err != nil {
				w.t.Fatal(err)
			}
			for _, id := range ids {
				out[id] = struct{}{}
			}
		}
	}
	return out
}

// garbageBytes is the shard bytes held for chunks not in live.
func (w *gcWorld) garbageBytes(ctx context.Context, live map[chunk.ID]struct{}) int64 {
	var n int64
	for _, st := range w.shards {
		err := st.EnumerateShards(ctx, nil, func(si chunkstore.ShardInfo) error {
			if _, ok := live[si.Key.ID]; !ok {
				n += int64(si.Len)
			}
			return nil
		})
		if err != nil {
			w.t.Fatal(err)
		}
	}
	return n
}

// TestGCRace runs concurrent backups of overlapping data while snapshots are forgotten
// and collections run, for 200 seeded rounds. In a third of the rounds one agent pauses
// between its existence answers and its commit while the clock passes the grace period
// and a collection sweeps its new chunks: its commit must be refused for missing chunks
// and succeed on retry. After every round, every chunk of every committed snapshot must
// still be readable; at the end, two collections must reclaim ≥ 95% of the bytes no
// snapshot references.
func TestGCRace(t *testing.T) {
	rounds := 200
	w := newGCWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := w.c.srv[w.c.leader()]
	waitFor(t, "initial map", func() bool { _, ok, _ := l.fsm.ClusterMap(); return ok })
	const vault = "race"
	if _, err := l.CreateVault(ctx, newVault(vault)); err != nil {
		t.Fatal(err)
	}
	p := newPool(rand.New(rand.NewPCG(1, 1)), 400)

	var pausedRefused, pausedRounds, otherRefusals, commits int
	used := map[meta.SnapshotID][]chunkstore.Chunk{} // each committed snapshot's chunks
	for round := range rounds {
		rng := rand.New(rand.NewPCG(uint64(round), 42))
		snaps, err := l.fsm.Snapshots(vault)
		if err != nil {
			t.Fatal(err)
		}
		paused := round%3 == 1
		nAgents := 2 + rng.IntN(2)
		type job struct {
			chunks []chunkstore.Chunk
			parent *meta.SnapshotID
			pause  func()
		}
		jobs := make([]job, nAgents)
		var pausedAt, resume chan struct{}
		for a := range jobs {
			var chunks []chunkstore.Chunk
			for _, i := range rng.Perm(len(p.chunks))[:20+rng.IntN(40)] {
				chunks = append(chunks, p.chunks[i])
			}
			// Half the agents back up "the next version" of an existing snapshot: its
			// chunks (but its tree) plus new ones, naming it as parent, which the commit
			// check trusts while it is committed. This round may forget and collect it.
			if len(snaps) > 0 && rng.IntN(2) == 0 {
				ps := snaps[rng.IntN(len(snaps))]
				if prev := used[ps.ID]; len(prev) > 0 {
					chunks = append(slices.Clone(prev[:len(prev)-1]), chunks[:10]...)
					id := ps.ID
					jobs[a].parent = &id
				}
			}
			for range 3 {
				chunks = append(chunks, uniqueChunk(rng))
			}
			chunks = append(chunks, uniqueChunk(rng)) // the tree, last
			jobs[a].chunks = chunks
		}
		if paused {
			pausedAt, resume = make(chan struct{}), make(chan struct{})
			jobs[0].pause = func() { close(pausedAt); <-resume }
		}
		forget := snaps
		rng.Shuffle(len(forget), func(i, j int) { forget[i], forget[j] = forget[j], forget[i] })
		forget = forget[:min(len(forget), rng.IntN(3))]

		runs := make([]agentRun, nAgents)
		var wg sync.WaitGroup
		for a := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runs[a] = w.backup(ctx, l, vault, jobs[a].chunks, jobs[a].parent, jobs[a].pause)
			}()
		}
		// Forget and collect while the backups run.
		if len(forget) > 0 {
			ids := make([]meta.SnapshotID, len(forget))
			for i, s := range forget {
				ids[i] = s.ID
			}
			if _, err := l.DeleteSnapshots(ctx, vault, ids, meta.Bypass{}); err != nil {
				t.Fatalf("round %d: forget: %v", round, err)
			}
		}
		if paused {
			<-pausedAt
			w.advance(w.grace + time.Minute)
		} else {
			w.advance(time.Duration(rng.Int64N(int64(w.grace) * 3 / 2)))
		}
		rep, err := l.RunGC(ctx, meta.GCOptions{})
		if err != nil {
			t.Fatalf("round %d: gc: %v", round, err)
		}
		if paused {
			close(resume)
		}
		wg.Wait()
		for a, r := range runs {
			if r.err != nil {
				t.Fatalf("round %d: agent %d: %v", round, a, r.err)
			}
			commits++
			used[r.snap.ID] = jobs[a].chunks
			if a == 0 && paused {
				pausedRounds++
				if r.refusals > 0 {
					pausedRefused++
				}
			} else {
				otherRefusals += r.refusals
			}
		}
		if paused && rep.SweptChunks == 0 {
			t.Fatalf("round %d: the collection while an agent was paused swept nothing: %+v", round, rep)
		}
		// Invariant: nothing a committed snapshot references was lost.
		for id := range w.referenced(ctx, l, vault) {
			if n := w.shardsOf(ctx, id); n < placement.DefaultProfile.K {
				t.Fatalf("round %d (seed %d): chunk %s referenced by a committed snapshot has %d shards left, fewer than k=%d", round, round, id.Str(), n, placement.DefaultProfile.K)
			}
		}
	}
	if pausedRefused != pausedRounds {
		t.Fatalf("%d of %d paused agents were refused at commit; want all (their new chunks were swept)", pausedRefused, pausedRounds)
	}
	if w.refused.Load() != 0 {
		t.Fatalf("chunk nodes refused %d orders from the leader", w.refused.Load())
	}

	// Reclaim: keep two snapshots, let the grace period pass, collect twice.
	snaps, err := l.fsm.Snapshots(vault)
	if err != nil {
		t.Fatal(err)
	}
	var drop []meta.SnapshotID
	for _, s := range snaps[:len(snaps)-2] {
		drop = append(drop, s.ID)
	}
	if _, err := l.DeleteSnapshots(ctx, vault, drop, meta.Bypass{}); err != nil {
		t.Fatal(err)
	}
	live := w.referenced(ctx, l, vault)
	before := w.garbageBytes(ctx, live)
	w.advance(2 * w.grace)
	for range 2 {
		if _, err := l.RunGC(ctx, meta.GCOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	after := w.garbageBytes(ctx, live)
	for id := range live {
		if n := w.shardsOf(ctx, id); n < placement.DefaultProfile.K {
			t.Fatalf("live chunk %s lost shards: %d left", id.Str(), n)
		}
	}
	reclaimed := float64(before-after) / float64(before)
	t.Logf("%d rounds, %d commits; paused agents refused and retried: %d/%d; other refusals: %d; garbage %d → %d bytes (%.1f%% reclaimed)",
		rounds, commits, pausedRefused, pausedRounds, otherRefusals, before, after, 100*reclaimed)
	if before == 0 || reclaimed < 0.95 {
		t.Fatalf("reclaimed %.1f%% of %d unreferenced bytes in two collections, want ≥ 95%%", 100*reclaimed, before)
	}
}

// TestGCOrdersOnlyFromLeaderInSweepPhase sends GC calls to a chunk node as a principal
// that is not the leader, and as the leader outside the right epoch or phase: every one is
// refused and deletes nothing.
func TestGCOrdersOnlyFromLeaderInSweepPhase(t *testing.T) {
	w := newGCWorld(t)
	ctx := ctxT(t)
	l := w.c.srv[w.c.leader()]
	waitFor(t, "initial map", func() bool { _, ok, _ := l.fsm.ClusterMap(); return ok })
	junk := uniqueChunk(rand.New(rand.NewPCG(7, 7)))
	if err := w.store.Put(ctx, []chunkstore.Chunk{junk}); err != nil {
		t.Fatal(err)
	}
	w.advance(2 * w.grace)
	node := w.gcn["c1"]
	leader := l.cfg.ID
	// Not the leader: refused at every step.
	if err := node.Prepare(ctx, "c2", 1, 0); !errors.Is(err, gcorder.ErrDenied) {
		t.Fatalf("prepare from a non-leader: %v, want ErrDenied", err)
	}
	// The leader, but an epoch that is not the next one.
	if err := node.Prepare(ctx, leader, 5, 0); !errors.Is(err, gcorder.ErrDenied) {
		t.Fatalf("prepare for a future epoch: %v, want ErrDenied", err)
	}
	// A sweep for epoch 1 before it began (state: epoch 0, idle).
	if _, err := node.Sweep(ctx, leader, 1, []chunk.ID{junk.ID}); !errors.Is(err, gcorder.ErrDenied) {
		t.Fatalf("sweep before the epoch: %v, want ErrDenied", err)
	}
	// A dry run leaves epoch 1 ended: sweeps for it are refused afterwards, from anyone.
	rep, err := l.RunGC(ctx, meta.GCOptions{DryRun: true})
	if err != nil || rep.Candidates != 1 || rep.SweptChunks != 0 {
		t.Fatalf("dry run: %+v, %v; want 1 candidate, none swept", rep, err)
	}
	for _, from := range []string{leader, "c2", ""} {
		if _, err := node.Sweep(ctx, from, 1, []chunk.ID{junk.ID}); !errors.Is(err, gcorder.ErrDenied) {
			t.Fatalf("sweep from %q after the epoch ended: %v, want ErrDenied", from, err)
		}
	}
	if n := w.shardsOf(ctx, junk.ID); n != 6 {
		t.Fatalf("refused orders deleted shards: %d of 6 left", n)
	}
	if got := w.refused.Load(); got != 6 {
		t.Fatalf("%d refusals reported, want 6", got)
	}
	// The real thing sweeps it.
	rep, err = l.RunGC(ctx, meta.GCOptions{})
	if err != nil || rep.SweptChunks != 1 || rep.SweptShards != 6 {
		t.Fatalf("gc: %+v, %v; want the chunk's 6 shards swept", rep, err)
	}
	if n := w.shardsOf(ctx, junk.ID); n != 0 {
		t.Fatalf("%d shards left after the sweep", n)
	}
	st, err := l.GCStatus(ctx)
	if err != nil || st.State.Epoch != 2 || st.State.Phase != meta.GCIdle || st.State.Last == nil || st.State.Last.SweptChunks != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
}
