package placement

import (
	"fmt"
	"strings"
)

// PGHealth is a repair worker's account of one placement group after a full pass over
// its stripes, placed by the map at Epoch.
type PGHealth struct {
	PG       uint32 `cbor:"pg" json:"pg"`
	Epoch    uint64 `cbor:"epoch" json:"epoch"`
	Reporter NodeID `cbor:"reporter" json:"reporter"`
	Stripes  int    `cbor:"stripes" json:"stripes"` // chunks seen in the PG
	// MinHealthy is the fewest healthy shards (StripeHealthy) over the PG's stripes;
	// when the PG holds no stripe, the positions a new stripe would fill healthy (N
	// unless a position cannot be placed or its owner is down).
	MinHealthy int `cbor:"min_healthy" json:"min_healthy"`
	N          int `cbor:"n" json:"n"` // k+m of the map's profile
	// Degraded counts stripes with fewer than N healthy shards; Inconsistent counts
	// stripes with a damaged shard (scrub); Unreadable counts stripes with fewer
	// than k usable shards.
	Degraded     int `cbor:"degraded" json:"degraded"`
	Inconsistent int `cbor:"inconsistent" json:"inconsistent"`
	Unreadable   int `cbor:"unreadable" json:"unreadable"`
	// Misplaced counts shards held by a node that is not their desired owner (they
	// move during backfill).
	Misplaced int `cbor:"misplaced" json:"misplaced"`
	// Bytes is the shard bytes of the PG's stripes when complete (k+m shards each):
	// what moving every position of the PG would copy.
	Bytes int64 `cbor:"bytes" json:"bytes"`
	// Reason says why the PG cannot be whole, when the map is the cause: "cannot
	// place: 6 shards need 6 domains, 5 eligible" (too few nodes hold PGs), or owners
	// that are down ("owner down: chunk-3; …"). Empty when nothing in the map stands
	// in the way.
	Reason string `cbor:"reason,omitempty" json:"reason,omitempty"`
}

// Describe is State with the reason, as `coffer admin pgs` shows it: "degraded
// (cannot place: 6 shards need 6 domains, 5 eligible)". A healthy PG has no reason.
func (h PGHealth) Describe() string {
	st := h.State()
	if h.Reason == "" || st == "healthy" {
		return st
	}
	return st + " (" + h.Reason + ")"
}

// StateAt names the PG's condition as seen at map epoch: "unknown" for a zero report
// (none has arrived), "unverified" for a report that was healthy or backfilling when
// placed by an older epoch (the new epoch's reporter has not finished a pass, so nothing
// vouches for the PG under the current map: a decommission or a drain waits for it),
// else State(). A problem found at an older epoch still shows as that problem.
func (h PGHealth) StateAt(epoch uint64) string {
	if h.Reporter == "" {
		return "unknown"
	}
	st := h.State()
	if h.Epoch < epoch && (st == "healthy" || st == "backfilling") {
		return "unverified"
	}
	return st
}

// DescribeAt is StateAt with the reason, as Describe.
func (h PGHealth) DescribeAt(epoch uint64) string {
	st := h.StateAt(epoch)
	if h.Reason == "" || st == "healthy" || st == "unknown" {
		return st
	}
	return st + " (" + h.Reason + ")"
}

// State names the PG's condition the way `coffer admin pgs` shows it: "unreadable",
// "inconsistent", "degraded", "backfilling" (healthy but shards still to move) or
// "healthy".
func (h PGHealth) State() string {
	switch {
	case h.Unreadable > 0:
		return "unreadable"
	case h.Inconsistent > 0:
		return "inconsistent"
	case h.Degraded > 0 || h.MinHealthy < h.N:
		return "degraded"
	case h.Misplaced > 0:
		return "backfilling"
	}
	return "healthy"
}

// StripeHealthy counts the healthy shards of one stripe: positions i whose desired
// owner desired[i] is active and holds shard i (held[i] reports that). Shards on down,
// draining or out nodes and shards held elsewhere do not count: losing them must not
// lose redundancy.
func StripeHealthy(desired []Node, held []bool) int {
	n := 0
	for i, d := range desired {
		if i < len(held) && held[i] && d.State == StateActive {
			n++
		}
	}
	return n
}

// CheckDecommission decides whether node id may be decommissioned under map m, given
// the latest health report of every PG. It is accepted only when the node holds no
// PG positions (it is draining or out) and every PG has a report placed by the current
// epoch that counts all k+m shards healthy (StripeHealthy excludes the node, which
// holds no position). Otherwise the error wraps ErrInvalid and names the node's state
// or the PGs that still depend on it with the shards missing (at most 20 listed, then
// a count).
func CheckDecommission(m *Map, id NodeID, reports []PGHealth) error {
	nd, ok := m.Node(id)
	if !ok {
		return fmt.Errorf("%w: node %q is not in the cluster map (epoch %d)", ErrInvalid, id, m.Epoch)
	}
	if nd.State != StateDraining && nd.State != StateOut {
		return fmt.Errorf("%w: node %s is %s: drain it first (coffer admin node drain %s)", ErrInvalid, id, nd.State, id)
	}
	n := m.Profile.N()
	byPG := make(map[uint32]PGHealth, len(reports))
	for _, r := range reports {
		if r.PG < m.PGCount && r.Epoch >= m.Epoch {
			if old, ok := byPG[r.PG]; !ok || r.Epoch > old.Epoch || (r.Epoch == old.Epoch && r.MinHealthy < old.MinHealthy) {
				byPG[r.PG] = r
			}
		}
	}
	var bad []string
	count := 0
	for pg := range m.PGCount {
		r, ok := byPG[pg]
		var why string
		switch {
		case !ok:
			why = fmt.Sprintf("pg %d: not yet verified at epoch %d", pg, m.Epoch)
		case r.N != n || r.MinHealthy < n:
			why = fmt.Sprintf("pg %d: %d of %d shards missing on %d degraded stripes", pg, n-min(r.MinHealthy, n), n, r.Degraded)
		case r.Inconsistent > 0 || r.Unreadable > 0:
			why = fmt.Sprintf("pg %d: %d inconsistent, %d unreadable stripes", pg, r.Inconsistent, r.Unreadable)
		default:
			continue
		}
		count++
		if len(bad) < 20 {
			bad = append(bad, why)
		}
	}
	if count == 0 {
		return nil
	}
	more := ""
	if count > len(bad) {
		more = fmt.Sprintf("; and %d more", count-len(bad))
	}
	return fmt.Errorf("%w: node %s: %d PGs would have fewer than %d healthy shards without it: %s%s",
		ErrInvalid, id, count, n, strings.Join(bad, "; "), more)
}
