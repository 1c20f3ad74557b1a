package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/erasure"
	"github.com/cofferhq/coffer/placement"
)

// maxCombinations bounds how many k-subsets of shards Get tries when rebuilt chunks fail
// their CRC (only possible when some shard is silently wrong).
const maxCombinations = 1024

// stripeKey is the part of ShardMeta that every shard of one stripe shares. Writer is
// not part of it: concurrent writers of the same chunk may each win some shards.
type stripeKey struct {
	k, m     uint8
	len, crc uint32
}

// fetched is the outcome of reading one shard.
type fetched struct {
	tried bool
	data  []byte
	key   stripeKey
	err   error // nil: usable shard
}

// getter is the state of one Get.
type getter struct {
	s     *Store
	ctx   context.Context
	id    chunk.ID
	l     layout
	nodes []placement.Node
	res   []fetched
	order []int // shard indexes in the order to try them
	next  int   // order[next:] are not tried yet
	// fellBack is set once shards were looked for off the current placement.
	fellBack bool
	// Reads in flight: they report on results and stay pending across fetch calls
	// (a read left behind by one fetch may still supply the shard a later one needs).
	results chan readResult
	pending map[int]bool
}

// readResult is the outcome of one shard read started by fetch.
type readResult struct {
	i int
	f fetched
}

// Get returns the chunk's bytes (a new slice the caller owns).
//
// It reads the k data shards in parallel first (nodes marked down last), then parity
// shards as needed until k shards with agreeing stripe metadata are in hand, rebuilds
// the chunk and checks its CRC32C. If the CRC does not match, it reads every remaining
// shard and tries other combinations of k.
//
// Errors name the chunk and the shard counts. With more than m shards unusable the error
// wraps chunkstore.ErrCorrupt if any shard was damaged (or no combination matched the
// CRC), else chunkstore.ErrNotFound if every missing shard was reported not found, else
// chunkstore.ErrUnavailable. A zero ID wraps chunkstore.ErrInvalid; a cancelled ctx
// returns its error.
func (s *Store) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("coord: get: zero chunk id: %w", chunkstore.ErrInvalid)
	}
	if err := ctxErr(ctx, "get "+id.Str()); err != nil {
		return nil, err
	}
	l, err := s.current()
	if err != nil {
		return nil, fmt.Errorf("coord: get %s: %w", id.Str(), err)
	}
	nodes, err := s.place(l, id)
	if err != nil {
		return nil, fmt.Errorf("coord: get: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx) // ends reads that fetch abandoned
	defer cancel()
	g := &getter{s: s, ctx: ctx, id: id, l: l, nodes: nodes, res: make([]fetched, l.n)}
	g.order = make([]int, 0, l.n)
	// Healthy nodes first, then nodes that stayed silent recently, then down nodes.
	silent := s.silentNodes(nodes)
	for pass := range 3 {
		for i, nd := range nodes {
			rank := 0
			switch {
			case nd.ID == "":
				continue // a position the map cannot place: no shard there
			case nd.State == placement.StateDown:
				rank = 2
			case silent[i]:
				rank = 1
			}
			if rank == pass {
				g.order = append(g.order, i)
			}
		}
	}
	data, err := g.run()
	// Reads still in flight are cancelled on return; their nodes were slower than k
	// others, so the next reads try them last.
	for i := range g.pending {
		s.markSilent(g.nodes[i].ID)
	}
	return data, err
}

func (g *getter) run() ([]byte, error) {
	g.fetch(g.l.k)
	for {
		key, members := g.bestStripe()
		if len(members) >= g.l.k {
			data, ok := g.decode(key, members[:g.l.k])
			if ok {
				g.report(key)
				return data, nil
			}
			break // a silent error somewhere: try every combination below
		}
		if g.next == len(g.order) && len(g.pending) == 0 {
			if g.fallback() {
				continue
			}
			return nil, g.failure(false)
		}
		g.fetch(g.l.k - len(members))
	}

	// Some shard decoded wrong without reporting an error. Read the rest and try other
	// combinations of k shards of each stripe.
	g.fetch(len(g.order) - g.next + len(g.pending))
	tries := 0
	for _, st := range g.stripes() {
		members := g.members(st)
		if len(members) < g.l.k {
			continue
		}
		var found []byte
		erasure.Combinations(len(members), g.l.k, func(pick []int) bool {
			if tries++; tries > maxCombinations {
				return false
			}
			sub := make([]int, len(pick))
			for i, p := range pick {
				sub[i] = members[p]
			}
			if data, ok := g.decode(st, sub); ok {
				found = data
				g.s.cfg.Logger.Warn("coord: chunk rebuilt around silently damaged shards",
					"chunk", g.id.String(), "used", sub, "candidates", members)
				return false
			}
			return true
		})
		if found != nil {
			g.report(st)
			return found, nil
		}
	}
	return nil, g.failure(true)
}

// fetch waits until n more shards have come back usable, or no read is in flight and
// none is left to start. It starts reads so that n are in flight (counting reads left
// from earlier calls), one more for each failure, and one more each hedge delay
// (HedgeDelay, or longer when reads are slow) during which no read answered: a node
// that died silently answers nothing until a transport timeout. Reads still running
// when it returns stay pending for later calls; Get cancels them when it returns.
func (g *getter) fetch(n int) {
	if g.results == nil {
		g.results = make(chan readResult, g.l.n) // each shard is read at most once
		g.pending = map[int]bool{}
	}
	launch := func() bool {
		if g.next == len(g.order) || len(g.pending) >= g.s.cfg.MaxParallel {
			return false
		}
		i := g.order[g.next]
		g.next++
		g.pending[i] = true
		go func() {
			start := time.Now()
			f := g.read(i)
			if f.err == nil {
				g.s.hedge.Observe(time.Since(start))
			}
			g.results <- readResult{i, f}
		}()
		return true
	}
	for len(g.pending) < n && launch() {
	}
	var hedge <-chan time.Time
	if g.s.cfg.HedgeDelay > 0 {
		t := time.NewTicker(g.s.hedge.Get())
		defer t.Stop()
		hedge = t.C
	}
	got := 0
	for got < n && len(g.pending) > 0 {
		select {
		case r := <-g.results:
			delete(g.pending, r.i)
			g.res[r.i] = r.f
			if r.f.err == nil {
				got++
			} else if len(g.pending) < n-got {
				launch()
			}
		case <-hedge:
			launch()
		}
	}
}

// read fetches shard i from its node and checks it against the layout.
func (g *getter) read(i int) fetched { return g.readFrom(g.nodes[i], i) }

// readFrom fetches shard i from node nd and checks it against the layout.
func (g *getter) readFrom(nd placement.Node, i int) fetched {
	st, err := g.s.readStore(nd)
	if err != nil {
		return fetched{tried: true, err: err}
	}
	key := chunkstore.ShardKey{ID: g.id, Index: uint8(i)}
	sh, err := st.GetShard(g.ctx, key)
	return checkShard(g.l, nd, key, sh, err)
}

// checkShard turns the answer (sh, err) of node nd to a read of key into a fetched
// shard, checked against the layout l: the key, the stripe profile and the shard's
// length for its chunk.
func checkShard(l layout, nd placement.Node, key chunkstore.ShardKey, sh chunkstore.Shard, err error) fetched {
	f := fetched{tried: true}
	i := key.Index
	if err != nil {
		f.err = fmt.Errorf("node %s shard %d: %w", nd.ID, i, err)
		return f
	}
	mt := sh.Meta
	switch {
	case sh.Key != key:
		f.err = fmt.Errorf("node %s shard %d: store returned key %s/%d: %w", nd.ID, i, sh.Key.ID.Str(), sh.Key.Index, chunkstore.ErrCorrupt)
	case int(mt.K) != l.k || int(mt.K)+int(mt.M) != l.n:
		f.err = fmt.Errorf("node %s shard %d: stripe profile %d+%d, map says %d+%d: %w", nd.ID, i, mt.K, mt.M, l.k, l.n-l.k, chunkstore.ErrCorrupt)
	case mt.ChunkLen == 0 || mt.ChunkLen > chunkstore.MaxChunkSize || len(sh.Data) != erasure.ShardLen(int(mt.K), int(mt.ChunkLen)):
		f.err = fmt.Errorf("node %s shard %d: %d bytes for a %d-byte chunk: %w", nd.ID, i, len(sh.Data), mt.ChunkLen, chunkstore.ErrCorrupt)
	default:
		f.data = sh.Data
		f.key = stripeKey{k: mt.K, m: mt.M, len: mt.ChunkLen, crc: mt.ChunkCRC}
	}
	return f
}

// fallback looks for the shards the current placement could not supply on every other
// node of the map: during backfill a shard may still sit on its previous owner (a node
// that is draining, out, or now owns another position of the PG). It asks each node
// once (HasShards for every unusable index, except the one it owns) and reads what it
// holds. It reports whether any shard was found; it runs at most once per Get.
func (g *getter) fallback() bool {
	if g.fellBack {
		return false
	}
	g.fellBack = true
	var want []int
	for i, f := range g.res {
		if !f.tried || f.err != nil {
			want = append(want, i)
		}
	}
	if len(want) == 0 {
		return false
	}
	found := false
	for _, nd := range g.l.m.Nodes {
		if nd.State == placement.StateDecommissioned || nd.State == placement.StateDown {
			continue
		}
		var keys []chunkstore.ShardKey
		for _, i := range want {
			if g.nodes[i].ID != nd.ID && !(g.res[i].tried && g.res[i].err == nil) {
				keys = append(keys, chunkstore.ShardKey{ID: g.id, Index: uint8(i)})
			}
		}
		if len(keys) == 0 {
			continue
		}
		st, err := g.s.shardStore(nd)
		if err != nil {
			continue
		}
		has, err := st.HasShards(g.ctx, keys)
		if err != nil || len(has) != len(keys) {
			continue
		}
		for j, ok := range has {
			i := int(keys[j].Index)
			if !ok {
				continue
			}
			if f := g.readFrom(nd, i); f.err == nil {
				g.res[i] = f
				found = true
			}
		}
	}
	if found {
		g.s.cfg.Logger.Debug("coord: shards found off the current placement", "chunk", g.id.String())
	}
	return found
}

// stripes returns the distinct stripe keys among usable shards, most shards first (ties
// by lowest shard index).
func (g *getter) stripes() []stripeKey {
	var keys []stripeKey
	count := make(map[stripeKey]int)
	for _, f := range g.res {
		if f.tried && f.err == nil {
			if count[f.key] == 0 {
				keys = append(keys, f.key)
			}
			count[f.key]++
		}
	}
	// Stable insertion sort by count, descending (a handful of keys at most).
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && count[keys[j]] > count[keys[j-1]]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// members returns the indexes of usable shards of stripe st, ascending.
func (g *getter) members(st stripeKey) []int {
	var out []int
	for i, f := range g.res {
		if f.tried && f.err == nil && f.key == st {
			out = append(out, i)
		}
	}
	return out
}

// bestStripe returns the stripe with the most usable shards and their indexes.
func (g *getter) bestStripe() (stripeKey, []int) {
	sts := g.stripes()
	if len(sts) == 0 {
		return stripeKey{}, nil
	}
	return sts[0], g.members(sts[0])
}

// decode rebuilds the chunk from the shards at idx (k of them) and checks its CRC.
func (g *getter) decode(st stripeKey, idx []int) ([]byte, bool) {
	shards := make([][]byte, g.l.n)
	for _, i := range idx {
		shards[i] = g.res[i].data
	}
	data, err := g.s.cfg.Codec.Decode(int(st.k), int(st.m), shards, int(st.len))
	if err != nil || g.s.crc(data) != st.crc {
		return nil, false
	}
	return data, true
}

// report logs shards that were damaged or disagree with the stripe that was read, so
// that repair can find them.
func (g *getter) report(used stripeKey) {
	for i, f := range g.res {
		switch {
		case !f.tried:
		case f.err == nil && f.key != used:
			g.s.cfg.Logger.Warn("coord: shard belongs to another stripe", "chunk", g.id.String(), "shard", i, "node", string(g.nodes[i].ID))
		case isCorrupt(f.err):
			g.s.cfg.Logger.Warn("coord: damaged shard", "chunk", g.id.String(), "shard", i, "node", string(g.nodes[i].ID), "err", f.err)
		case f.err != nil:
			g.s.cfg.Logger.Debug("coord: shard unavailable", "chunk", g.id.String(), "shard", i, "node", string(g.nodes[i].ID), "err", f.err)
		}
	}
}

// failure builds Get's error once no stripe can be rebuilt. crcFailed says that some
// combination of k shards decoded to a chunk that failed its CRC.
func (g *getter) failure(crcFailed bool) error {
	if err := ctxErr(g.ctx, "get "+g.id.Str()); err != nil {
		return err
	}
	var ok, notFound, corrupt, unavailable int
	var first error
	best, _ := g.bestStripe()
	for _, f := range g.res {
		switch {
		case !f.tried:
			unavailable++ // unreachable in practice: failure runs after every shard was tried
		case f.err == nil && f.key == best:
			ok++
		case f.err == nil:
			corrupt++ // a minority stripe: disagrees with the others
		case errors.Is(f.err, chunkstore.ErrNotFound):
			notFound++
		case isCorrupt(f.err):
			corrupt++
		default:
			unavailable++
		}
		if f.err != nil && first == nil {
			first = f.err
		}
	}
	var kind error
	switch {
	case crcFailed || corrupt > 0:
		kind = chunkstore.ErrCorrupt
	case unavailable == 0 && notFound > 0:
		kind = chunkstore.ErrNotFound
	default:
		kind = chunkstore.ErrUnavailable
	}
	msg := fmt.Sprintf("coord: get %s: %d of %d shards usable, need %d (not found %d, corrupt %d, unavailable %d)",
		g.id.Str(), ok, g.l.n, g.l.k, notFound, corrupt, unavailable)
	if crcFailed {
		msg += "; no combination of shards matches the chunk CRC"
	}
	if first != nil {
		msg += "; first error: " + first.Error()
	}
	return fmt.Errorf("%s: %w", msg, kind)
}
