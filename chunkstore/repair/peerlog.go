package repair

import (
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cofferhq/coffer/placement"
)

// peerLog gathers a pass's failed calls to other nodes, so that the pass logs one line
// per peer with counts instead of one per shard (a peer that is down fails every shard
// it should take: thousands of lines a minute).
type peerLog struct {
	mu    sync.Mutex
	peers map[placement.NodeID]*peerFailures
}

// peerFailures is one peer's failed calls in a pass.
type peerFailures struct {
	ops   map[string]int // by operation: "put", "delete", "list"
	first error
}

// fail records a failed op on node id.
func (p *peerLog) fail(id placement.NodeID, op string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.peers == nil {
		p.peers = map[placement.NodeID]*peerFailures{}
	}
	f := p.peers[id]
	if f == nil {
		f = &peerFailures{ops: map[string]int{}, first: err}
		p.peers[id] = f
	}
	f.ops[op]++
}

// log writes one warning per peer that failed a call in the pass: the peer, the
// failures by operation ("put=312 delete=2") and the first error.
func (p *peerLog) log(l *slog.Logger, epoch uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]placement.NodeID, 0, len(p.peers))
	for id := range p.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		f := p.peers[id]
		ops := make([]string, 0, len(f.ops))
		total := 0
		for op, n := range f.ops {
			ops = append(ops, op+"="+strconv.Itoa(n))
			total += n
		}
		slices.Sort(ops)
		l.Warn("repair: peer failed calls this pass", "peer", string(id), "epoch", epoch, "failed", total,
			"by_op", strings.Join(ops, " "), "first_err", f.first)
	}
}
