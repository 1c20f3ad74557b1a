package node

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

const (
	// securityRefresh is how often a node reads the cluster time and the revocation list
	// from the meta leader: a revocation is enforced by every node at most about this
	// long (plus one round trip) after it is committed.
	securityRefresh = time.Second
	// maxClockAge is how old the last cluster-time reading may be before restore grants
	// are no longer judged (answered Unavailable) on this node.
	maxClockAge = 30 * time.Second
)

// security is the node's latest reading of the meta leader's SecurityState.
type security struct {
	st meta.SecurityState
	// sent is this node's clock (with its monotonic reading) when the request that
	// returned st was sent: the cluster time now is at least st.Now + time.Since(sent).
	sent time.Time
}

// securityState holds the node's view of revocations and cluster time. Safe for
// concurrent use.
type securityState struct {
	cur atomic.Pointer[security]
}

// refreshSecurity polls the meta leader's SecurityState every securityRefresh until ctx
// ends. Owned by New.
func (n *Node) refreshSecurity(ctx context.Context) {
	t := time.NewTicker(securityRefresh)
	defer t.Stop()
	for {
		n.pollSecurity(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) pollSecurity(ctx context.Context) {
	var known uint64
	cur := n.sec.cur.Load()
	if cur != nil {
		known = cur.st.Version
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// NB: time.Now, not deps.Now: only its monotonic reading is used, to measure how long
	// ago the leader vouched for the cluster time, which no wall-clock change can bend.
	sent := time.Now()
	st, err := n.metaC.SecurityState(cctx, known)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Debug("security state not available", "err", err)
		}
		return
	}
	if cur != nil && st.Version == known {
		st.Revocations = cur.st.Revocations
	}
	if cur == nil || st.Version != known {
		n.log.Info("revocation list", "version", st.Version, "entries", len(st.Revocations))
	}
	n.sec.cur.Store(&security{st: st, sent: sent})
}

// clusterNow estimates the cluster time from the last reading: the leader's cluster time
// plus the real time elapsed since the request was sent (on the monotonic clock, so a
// wall clock set back or ahead on this node changes nothing). While the cluster clock runs
// at real speed the estimate is a little late (grants end early); when it catches up on a
// lag (at most 1% faster than real time) the estimate can trail it by at most the
// catch-up since the last reading, 1% of it.
func (n *Node) clusterNow() (time.Time, error) {
	cur := n.sec.cur.Load()
	if cur == nil || cur.st.Now.IsZero() {
		return time.Time{}, fmt.Errorf("node %s: no cluster time from the meta leader yet", n.cfg.ID)
	}
	age := time.Since(cur.sent)
	if age > maxClockAge {
		return time.Time{}, fmt.Errorf("node %s: last cluster time from the meta leader is %v old (limit %v)", n.cfg.ID, age.Round(time.Second), maxClockAge)
	}
	return cur.st.Now.Add(age), nil
}

// checkPeer is the endpoint's transport.PeerCheck: it refuses, on every connection and
// for every request, a peer whose certificate is revoked by the list this node last
// fetched, and records the refusal in the audit log.
func (n *Node) checkPeer(ctx context.Context, peer transport.Peer, method string) error {
	cur := n.sec.cur.Load()
	if cur == nil {
		return nil
	}
	r, ok := meta.Revoked(cur.st.Revocations, peer.Serial, peer.Principal, peer.Issued)
	if !ok {
		return nil
	}
	what := "certificate serial " + r.Serial
	if r.Serial == "" {
		what = fmt.Sprintf("certificates of principal %q issued before %s", r.Principal, r.At.Format(time.RFC3339))
	}
	err := transport.Errorf(transport.PermissionDenied, "node %s: %s: %s %q (serial %s) is refused: %s revoked at %s by %s",
		n.cfg.ID, method, peer.Role, peer.Principal, peer.Serial, what, r.At.Format(time.RFC3339), r.By)
	n.log.Warn("refused request from a revoked certificate", "peer", peer.Principal, "serial", peer.Serial, "method", method, "addr", peer.Addr)
	n.auditRefusal(n.ctx, peer, method, err.Error())
	return err
}

// loadCA reads the cluster CA and its key for signing enrolled agents' certificates.
func loadCA(certFile, keyFile string) (*pki.CA, error) {
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("node: CA: %w", err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("node: CA key: %w", err)
	}
	ca, err := pki.LoadCA(cert, key)
	if err != nil {
		return nil, fmt.Errorf("node: CA key %s: %w", keyFile, err)
	}
	return ca, nil
}

// RevocationVersion returns the version (the Seq of the newest revocation) of the list
// this node enforces: 0 before its first reading or while there is none.
func (n *Node) RevocationVersion() uint64 {
	if cur := n.sec.cur.Load(); cur != nil {
		return cur.st.Version
	}
	return 0
}
