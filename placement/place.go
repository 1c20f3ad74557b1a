package placement

import (
	"encoding/binary"
	"fmt"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// PG returns the placement group of a chunk: the first 8 bytes of its ID, big-endian,
// modulo PGCount. The map must be valid (Validate); a map with PGCount 0 maps every ID
// to PG 0.
func (m *Map) PG(id chunk.ID) uint32 {
	if m.PGCount == 0 {
		return 0
	}
	return uint32(binary.BigEndian.Uint64(id[:8]) % uint64(m.PGCount))
}

// candidate is a node eligible for a PG with its failure-domain index.
type candidate struct {
	node   *Node
	weight float64
	domain int
}

// Place returns the n nodes that hold PG pg, in shard order: shard i of every chunk in
// the PG lives on the i-th node. The result is a new slice; the map is not modified.
// Place is deterministic: equal maps give equal answers on every platform.
//
// Eligible nodes are those whose State.HoldsPGs: Active and Down. A Down node keeps its
// positions until it is marked Out, so a transient failure moves no data; writers skip
// it (it counts as a failed shard) and readers try it last.
//
// Selection (placement format v1, see FORMAT.md) is weighted rendezvous hashing per
// position, with failure domains:
//   - Domain cap: the smallest c ≥ 1 such that taking at most c eligible nodes from every
//     failure domain still yields n nodes. With at least n distinct domains c is 1: no
//     domain holds two shards of a PG. With fewer domains they fill evenly: each domain
//     d holds at most c and at least min(size(d), c-1) nodes of the PG. A node with an
//     empty Domain is a domain of its own.
//   - Positions 0..n-1 choose in turn. Position p takes, among the feasible nodes, the
//     one with the highest score weight / -ln(u), where u is the uniform (0,1) value of
//     the 64-bit placement hash of (pg, p, node ID); ties go to the lower ID. A node is
//     feasible if it is not chosen yet, its domain is below the cap, and taking it
//     still leaves enough positions for every domain to reach its minimum.
//
// Scoring every position separately (rather than ranking nodes once and dealing them
// out in order) keeps positions stable: adding or removing a node changes mostly the
// positions that node wins or held, instead of shifting every position after it. With
// 12 nodes and n=6, adding a 13th node moves about 10% of (PG, position) slots against
// a fair share of 7.7%.
//
// Errors: n < 1, n > MaxShards or pg ≥ PGCount wrap ErrInvalid; fewer eligible nodes
// than n wraps ErrNotEnoughNodes and names both counts.
func (m *Map) Place(pg uint32, n int) ([]Node, error) {
	if n < 1 || n > MaxShards {
		return nil, fmt.Errorf("%w: place pg %d: %d nodes requested, want 1..%d", ErrInvalid, pg, n, MaxShards)
	}
	if pg >= m.PGCount {
		return nil, fmt.Errorf("%w: place pg %d: map has %d pgs", ErrInvalid, pg, m.PGCount)
	}
	cands := make([]candidate, 0, len(m.Nodes))
	domains := make(map[string]int)
	var domSize []int // indexed by domain
	for i := range m.Nodes {
		nd := &m.Nodes[i]
		if !nd.State.HoldsPGs() {
			continue
		}
		dom := len(domSize)
		if nd.Domain != "" {
			if d, ok := domains[nd.Domain]; ok {
				dom = d
			} else {
				domains[nd.Domain] = dom
			}
		}
		if dom == len(domSize) {
			domSize = append(domSize, 0)
		}
		domSize[dom]++
		cands = append(cands, candidate{node: nd, weight: nd.EffectiveWeight(), domain: dom})
	}
	if len(cands) < n {
		return nil, fmt.Errorf("%w: place pg %d: need %d nodes, %d of %d eligible (active or down)",
			ErrNotEnoughNodes, pg, n, len(cands), len(m.Nodes))
	}

	capacity := 1
	for {
		total := 0
		for _, s := range domSize {
			total += min(s, capacity)
		}
		if total >= n {
			break
		}
		capacity++
	}

	// Every domain must reach floor(d) = min(size(d), capacity-1); deficit is how many
	// positions those floors still claim.
	floor := make([]int, len(domSize))
	deficit := 0
	for d, sz := range domSize {
		floor[d] = min(sz, capacity-1)
		deficit += floor[d]
	}

	// NB: a feasible node always exists. If the positions left equal the deficit, some
	// domain is below its floor (< capacity) and has unchosen nodes. Otherwise the
	// capacity left, Σ min(size, cap) minus the nodes chosen, exceeds 0.
	out := make([]Node, n)
	taken := make([]bool, len(cands))
	perDomain := make([]int, len(domSize))
	for p := range n {
		onlyBelowFloor := deficit == n-p
		best := -1
		var bestScore float64
		for i := range cands {
			c := &cands[i]
			cnt := perDomain[c.domain]
			if taken[i] || cnt >= capacity || (onlyBelowFloor && cnt >= floor[c.domain]) {
				continue
			}
			s := score(c.weight, placementHash(pg, uint8(p), c.node.ID))
			if best < 0 || s > bestScore || (s == bestScore && c.node.ID < cands[best].node.ID) {
				best, bestScore = i, s
			}
		}
		d := cands[best].domain
		if perDomain[d] < floor[d] {
			deficit--
		}
		taken[best] = true
		perDomain[d]++
		out[p] = *cands[best].node
	}
	return out, nil
}
