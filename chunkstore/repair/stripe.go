package repair

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/erasure"
	"github.com/cofferhq/coffer/placement"
)

// maxCombinations bounds the k-subsets a deep scrub tries when a rebuilt chunk fails
// its CRC (only possible when a shard is silently wrong).
const maxCombinations = 256

// outcome is what fixStripe did to one stripe.
type outcome struct {
	healthy                                    int // after the repair
	rebuilt, copied, dropped, missing, corrupt int
	stray                                      int // copies left off their owner
	unreadable                                 string
	full                                       []placement.NodeID // owners that refused a shard: disk full
}

// majorityMeta returns the stripe metadata most holders agree on.
func majorityMeta(s *stripe) chunkstore.ShardMeta {
	type key struct {
		k, m     uint8
		len, crc uint32
	}
	count := map[key]int{}
	var best chunkstore.ShardMeta
	bestN := 0
	for _, hs := range s.shards {
		for _, h := range hs {
			kk := key{h.meta.K, h.meta.M, h.meta.ChunkLen, h.meta.ChunkCRC}
			count[kk]++
			if count[kk] > bestN {
				best, bestN = h.meta, count[kk]
			}
		}
	}
	return best
}

// fixStripe brings one stripe to its desired owners (see the package comment).
func (w *Worker) fixStripe(ctx context.Context, epoch uint64, desired []placement.Node, k int, s *stripe, deep bool, peers *peerLog) outcome {
	var o outcome
	n := len(desired)
	mt := majorityMeta(s)
	if int(mt.K) != k || int(mt.K)+int(mt.M) != n {
		// Written under another profile: leave it where it is (a profile change
		// needs its own migration).
		o.healthy = healthy(desired, s)
		o.unreadable = ""
		return o
	}
	good := make([][]byte, n) // verified shard data by index
	badAt := make([]map[placement.NodeID]bool, n)
	markBad := func(i int, id placement.NodeID) {
		if badAt[i] == nil {
			badAt[i] = map[placement.NodeID]bool{}
		}
		badAt[i][id] = true
	}
	ownerHas := make([]bool, n) // the desired owner holds a good (or unchecked) copy
	need := make([]bool, n)
	var problems []string
	for i, d := range desired {
		ownerHas[i] = holds(s.shards[i], d.ID)
		if d.State != placement.StateActive {
			continue
		}
		if !ownerHas[i] {
			need[i] = true
			o.missing++
			continue
		}
		if deep {
			data, err := w.read(ctx, d, s, i, mt)
			if werr := w.lim.wait(ctx, len(data)); werr != nil {
				return o
			}
			switch {
			case err == nil:
				good[i] = data
			case errors.Is(err, chunkstore.ErrCorrupt):
				o.corrupt++
				markBad(i, d.ID)
				need[i], ownerHas[i] = true, false
				problems = append(problems, fmt.Sprintf("shard %d on %s corrupt", i, d.ID))
			case errors.Is(err, chunkstore.ErrNotFound):
				o.missing++
				need[i], ownerHas[i] = true, false
			default:
				problems = append(problems, fmt.Sprintf("shard %d on %s: %v", i, d.ID, err))
			}
		}
	}
	anyNeed := func() bool {
		for _, x := range need {
			if x {
				return true
			}
		}
		return false
	}

	var full [][]byte // the whole re-encoded stripe, when rebuilt
	if anyNeed() || deep {
		// Copy shards held off their owner first: one read per shard.
		copied := make([]bool, n)
		for i := range need {
			if !need[i] || good[i] != nil {
				continue
			}
			for _, h := range s.shards[i] {
				if h.node.ID == desired[i].ID || badAt[i][h.node.ID] {
					continue
				}
				data, err := w.read(ctx, h.node, s, i, mt)
				if err == nil {
					good[i], copied[i] = data, true
					break
				}
				if errors.Is(err, chunkstore.ErrCorrupt) {
					o.corrupt++
					markBad(i, h.node.ID)
				}
			}
		}
		needRebuild := deep
		for i := range need {
			if need[i] && good[i] == nil {
				needRebuild = true
			}
		}
		if needRebuild {
			full = w.rebuild(ctx, s, desired, k, mt, good, badAt, markBad, &o)
			if full == nil {
				have := 0
				for _, g := range good {
					if g != nil {
						have++
					}
				}
				msg := fmt.Sprintf("chunk %s: %d of %d shards usable, need %d", s.id.String(), have, n, k)
				if len(problems) > 0 {
					msg += " (" + strings.Join(problems, "; ") + ")"
				}
				o.unreadable = msg
			} else if deep {
				// Any shard that differs from the re-encoded stripe is wrong.
				for i, g := range good {
					if g != nil && !copied[i] && !bytes.Equal(g, full[i]) {
						o.corrupt++
						markBad(i, desired[i].ID)
						need[i], ownerHas[i] = true, false
					}
				}
			}
		}
		// Write what the owners lack.
		for i, d := range desired {
			if !need[i] {
				continue
			}
			data := good[i]
			if full != nil {
				data = full[i]
			}
			if data == nil {
				continue
			}
			st := w.cfg.Shards(d)
			if st == nil {
				continue
			}
			key := chunkstore.ShardKey{ID: s.id, Index: uint8(i)}
			if badAt[i][d.ID] {
				// First write wins: the damaged copy must go before the good one lands.
				if err := st.DeleteShards(ctx, []chunkstore.ShardKey{key}); err != nil {
					peers.fail(d.ID, "delete", err)
					continue
				}
			}
			if err := w.lim.wait(ctx, len(data)); err != nil {
				return o
			}
			err := st.PutShards(ctx, []chunkstore.Shard{{Key: key, Meta: mt, Data: data}})
			if err != nil {
				peers.fail(d.ID, "put", err)
				if errors.Is(err, chunkstore.ErrNoSpace) && !slices.Contains(o.full, d.ID) {
					o.full = append(o.full, d.ID)
				}
				continue
			}
			ownerHas[i] = true
			w.written.Add(int64(len(data)))
			if full != nil && !copiedFrom(good, i, full) {
				o.rebuilt++
				w.rebuilt.Add(1)
			} else {
				o.copied++
				w.copied.Add(1)
			}
		}
	}

	// Drop copies off their owner once the owner holds the shard durably. The owner is
	// asked again right before (another worker on another map epoch may have moved
	// the shard since the listing), and nothing is dropped once the map has moved on.
	stillOwner := make([]bool, n)
	if cur := w.cfg.Map(); cur != nil && cur.Epoch == epoch {
		for i, d := range desired {
			if !ownerHas[i] || d.State != placement.StateActive || len(s.shards[i]) == 0 ||
				(len(s.shards[i]) == 1 && s.shards[i][0].node.ID == d.ID) {
				continue
			}
			if st := w.cfg.Shards(d); st != nil {
				has, err := st.HasShards(ctx, []chunkstore.ShardKey{{ID: s.id, Index: uint8(i)}})
				stillOwner[i] = err == nil && len(has) == 1 && has[0]
			}
		}
	}
	for i, d := range desired {
		for _, h := range s.shards[i] {
			if h.node.ID == d.ID {
				continue
			}
			if !stillOwner[i] {
				o.stray++
				continue
			}
			st := w.cfg.Shards(h.node)
			if st == nil {
				o.stray++
				continue
			}
			if err := st.DeleteShards(ctx, []chunkstore.ShardKey{{ID: s.id, Index: uint8(i)}}); err != nil {
				o.stray++
				continue
			}
			o.dropped++
			w.dropped.Add(1)
		}
	}
	held := make([]bool, n)
	copy(held, ownerHas)
	o.healthy = placement.StripeHealthy(desired, held)
	w.missing.Add(int64(o.missing))
	w.corrupt.Add(int64(o.corrupt))
	return o
}

// copiedFrom reports whether shard i was read verbatim (a copy) rather than rebuilt.
func copiedFrom(good [][]byte, i int, full [][]byte) bool {
	return good[i] != nil && bytes.Equal(good[i], full[i])
}

// rebuild reads shards until some k of them decode to a chunk matching the stripe CRC
// and returns the re-encoded stripe, or nil.
func (w *Worker) rebuild(ctx context.Context, s *stripe, desired []placement.Node, k int, mt chunkstore.ShardMeta,
	good [][]byte, badAt []map[placement.NodeID]bool, markBad func(int, placement.NodeID), o *outcome) [][]byte {
	n := len(desired)
	try := func() [][]byte {
		var idx []int
		for i, g := range good {
			if g != nil {
				idx = append(idx, i)
			}
		}
		if len(idx) < k {
			return nil
		}
		var out [][]byte
		tries := 0
		erasure.Combinations(len(idx), k, func(pick []int) bool {
			if tries++; tries > maxCombinations {
				return false
			}
			sh := make([][]byte, n)
			for _, p := range pick {
				sh[idx[p]] = good[idx[p]]
			}
			data, err := w.cfg.Codec.Decode(k, n-k, sh, int(mt.ChunkLen))
			if err != nil || crcOf(w, data) != mt.ChunkCRC {
				return true
			}
			enc, err := w.cfg.Codec.Encode(k, n-k, data)
			if err != nil {
				return true
			}
			out = enc
			return false
		})
		return out
	}
	if full := try(); full != nil {
		return full
	}
	// Read more shards, desired owners first, then any other holder.
	for i := range n {
		if good[i] != nil {
			continue
		}
		cands := append([]holding(nil), s.shards[i]...)
		for _, h := range cands {
			if badAt[i][h.node.ID] || h.node.State == placement.StateDown {
				continue
			}
			data, err := w.read(ctx, h.node, s, i, mt)
			if err == nil {
				good[i] = data
				break
			}
			if errors.Is(err, chunkstore.ErrCorrupt) {
				o.corrupt++
				markBad(i, h.node.ID)
			}
		}
		if full := try(); full != nil {
			return full
		}
	}
	return nil
}

// read fetches shard i of s from nd and checks it against the stripe metadata.
func (w *Worker) read(ctx context.Context, nd placement.Node, s *stripe, i int, mt chunkstore.ShardMeta) ([]byte, error) {
	st := w.cfg.Shards(nd)
	if st == nil {
		return nil, fmt.Errorf("repair: node %s has no shard store: %w", nd.ID, chunkstore.ErrUnavailable)
	}
	key := chunkstore.ShardKey{ID: s.id, Index: uint8(i)}
	sh, err := st.GetShard(ctx, key)
	if err != nil {
		return nil, err
	}
	if sh.Key != key || sh.Meta.K != mt.K || sh.Meta.M != mt.M || sh.Meta.ChunkLen != mt.ChunkLen ||
		sh.Meta.ChunkCRC != mt.ChunkCRC || len(sh.Data) != erasure.ShardLen(int(mt.K), int(mt.ChunkLen)) {
		return nil, fmt.Errorf("repair: node %s shard %s/%d does not match its stripe: %w", nd.ID, s.id.Str(), i, chunkstore.ErrCorrupt)
	}
	return sh.Data, nil
}

// dropPartial deletes what is left of stripe s when it is still short of k shards: every
// node of m that may hold a shard (all but the decommissioned) is asked again for every
// position, and the shards go only when all of them answered and fewer than k distinct
// positions are held. It reports whether the stripe is gone.
//
// Such a stripe is what a put that failed part-way left behind: an acknowledged put
// stores at least k+1 shards, and the caller asks only after the stripe has been short
// everywhere for abandonAge. The second look right before the delete keeps a put of the
// same chunk that lands meanwhile: its shards bring the stripe to k. (A put that only
// re-confirms the old shards, first write wins, in the instant between the look and the
// delete would count them; the commit check's Has then finds the chunk short and the
// agent uploads it again, so no snapshot commits on it.)
func (w *Worker) dropPartial(ctx context.Context, m *placement.Map, k int, s *stripe, peers *peerLog) bool {
	n := len(s.shards)
	keys := make([]chunkstore.ShardKey, n)
	for i := range keys {
		keys[i] = chunkstore.ShardKey{ID: s.id, Index: uint8(i)}
	}
	type held struct {
		st   chunkstore.ShardStore
		keys []chunkstore.ShardKey
	}
	var holders []held
	positions := make([]bool, n)
	for _, nd := range m.Nodes {
		if nd.State == placement.StateDecommissioned {
			continue
		}
		if nd.State == placement.StateDown {
			return false
		}
		st := w.cfg.Shards(nd)
		if st == nil {
			return false
		}
		has, err := st.HasShards(ctx, keys)
		if err != nil || len(has) != n {
			peers.fail(nd.ID, "has", err)
			return false
		}
		var mine []chunkstore.ShardKey
		for i, ok := range has {
			if ok {
				positions[i] = true
				mine = append(mine, keys[i])
			}
		}
		if len(mine) > 0 {
			holders = append(holders, held{st, mine})
		}
	}
	count := 0
	for _, ok := range positions {
		if ok {
			count++
		}
	}
	if count >= k {
		return false
	}
	gone := true
	for _, h := range holders {
		if err := h.st.DeleteShards(ctx, h.keys); err != nil {
			gone = false
		}
	}
	return gone
}
