package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"filippo.io/age"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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
	// securityRetry is the poll interval while the node does not yet hold a current
	// revocation list (and so serves only its peers).
	securityRetry = 100 * time.Millisecond
	// maxClockAge is how old the last cluster-time reading may be before restore grants
	// are no longer judged (answered Unavailable) on this node.
	maxClockAge = 30 * time.Second
	// revocationFile, in the data directory, holds the newest revocation list the node
	// has seen (JSON of revocationList), replaced atomically.
	revocationFile = "revocations.json"
)

// security is the node's latest reading of the meta leader's SecurityState.
type security struct {
	st meta.SecurityState
	// sent is this node's clock (with its monotonic reading) when the request that
	// returned st was sent: the cluster time now is at least st.Now + time.Since(sent).
	sent time.Time
}

// revocationList is the list a node enforces, as persisted in revocationFile.
type revocationList struct {
	// Version is the Seq of the newest revocation (0: none).
	Version     uint64            `json:"version"`
	Revocations []meta.Revocation `json:"revocations"`
	// current is set once the node has read from the meta leader a list at least as new
	// as the one it persisted before (not persisted).
	current bool
}

// securityState holds the node's view of revocations and cluster time. Safe for
// concurrent use.
type securityState struct {
	cur atomic.Pointer[security]       // newest reading: cluster time
	rev atomic.Pointer[revocationList] // enforced list; never nil after New
}

// loadRevocations reads the list this node persisted (an empty one, version 0, when
// there is none). A file that does not parse is an error naming it: removing it is
// safe, since a node serves only its peers until it reads a current list anyway.
func loadRevocations(dataDir string) (*revocationList, error) {
	p := filepath.Join(dataDir, revocationFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &revocationList{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: revocation list: %w", err)
	}
	var l revocationList
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("node: revocation list %s is damaged (%v); remove it to start with none: the node then serves only its peers until it reads the list from the meta leader", p, err)
	}
	for _, r := range l.Revocations {
		if err := meta.ValidateRevocation(r); err != nil || r.Seq > l.Version {
			return nil, fmt.Errorf("node: revocation list %s: entry %d: %v (seq above the list's version %d?); remove the file to start with none", p, r.Seq, err, l.Version)
		}
	}
	return &l, nil
}

// saveRevocations writes l to the data directory atomically (temporary file, fsync,
// rename, fsync of the directory).
func saveRevocations(dataDir string, l *revocationList) error {
	b, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("node: save revocation list: %w", err)
	}
	p := filepath.Join(dataDir, revocationFile)
	if err := writeFileSynced(p, b); err != nil {
		return fmt.Errorf("node: save revocation list: %w", err)
	}
	return nil
}

// writeFileSynced replaces path with data: a temporary file in the same directory,
// fsynced, renamed over path, then the directory fsynced.
func writeFileSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// refreshSecurity polls the meta leader's SecurityState every securityRefresh (every
// securityRetry while the node holds no current revocation list) until ctx ends. Owned
// by New.
func (n *Node) refreshSecurity(ctx context.Context) {
	for {
		n.pollSecurity(ctx)
		wait := securityRefresh
		if !n.sec.rev.Load().current {
			wait = securityRetry
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (n *Node) pollSecurity(ctx context.Context) {
	have := n.sec.rev.Load()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// NB: time.Now, not deps.Now: only its monotonic reading is used, to measure how long
	// ago the leader vouched for the cluster time, which no wall-clock change can bend.
	sent := time.Now()
	st, err := n.metaC.SecurityState(cctx, have.Version)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Debug("security state not available", "err", err)
		}
		return
	}
	n.sec.cur.Store(&security{st: st, sent: sent})
	switch {
	case st.Version < have.Version:
		// A deposed leader, or a meta group restored from an old backup: never go back
		// (and, before the first current reading, stay closed).
		n.log.Warn("the meta leader's revocation list is older than the one this node holds; keeping this node's (if the meta group was restored from an older state on purpose, remove the file)",
			"leader_version", st.Version, "version", have.Version, "file", filepath.Join(n.cfg.DataDir, revocationFile))
		return
	case st.Version == have.Version:
		if !have.current {
			n.sec.rev.Store(&revocationList{Version: have.Version, Revocations: have.Revocations, current: true})
			n.log.Info("revocation list is current", "version", have.Version, "entries", len(have.Revocations))
		}
		return
	}
	next := &revocationList{Version: st.Version, Revocations: st.Revocations, current: true}
	if err := saveRevocations(n.cfg.DataDir, next); err != nil {
		// Enforced all the same; after a restart the node waits for the leader's list.
		n.log.Error("revocation list not persisted", "version", next.Version, "err", err)
	}
	n.sec.rev.Store(next)
	n.log.Info("revocation list", "version", next.Version, "entries", len(next.Revocations))
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
// for every request, a peer whose certificate is revoked by the list this node holds (the
// leader's newest, or the one it persisted before a restart) and records the refusal in
// the audit log. Until the node has read from the meta leader a list at least as new as
// the one it persisted, it serves only cluster nodes (node and meta certificates) and
// answers every other peer Unavailable: revocation fails closed. A request served so
// far is then checked against the authorization table (authorize).
func (n *Node) checkPeer(ctx context.Context, peer transport.Peer, method string) error {
	rl := n.sec.rev.Load()
	if r, ok := meta.Revoked(rl.Revocations, peer.Serial, peer.Principal, peer.Issued); ok {
		what := "certificate serial " + r.Serial
		if r.Serial == "" {
			what = fmt.Sprintf("certificates of principal %q issued before %s", r.Principal, r.At.Format(time.RFC3339))
		}
		err := transport.Errorf(transport.PermissionDenied, "node %s: %s: %s %q (serial %s) is refused: %s revoked at %s by %s",
			n.cfg.ID, method, peer.Role, peer.Principal, peer.Serial, what, r.At.Format(time.RFC3339), r.By)
		n.counters.revokedRequests.Add(1)
		n.log.Warn("refused request from a revoked certificate", "peer", peer.Principal, "serial", peer.Serial, "method", method, "addr", peer.Addr)
		n.auditRefusal(n.ctx, peer, method, err.Error())
		return err
	}
	if !rl.current && !peer.Role.IsNode() {
		return transport.Errorf(transport.Unavailable, "node %s: %s: %s %q not served: this node has not yet read a current revocation list from the meta leader (it holds version %d); until it does it serves only cluster nodes",
			n.cfg.ID, method, peer.Role, peer.Principal, rl.Version)
	}
	return n.authorize(peer, method)
}

// memberRevoked reports whether a gossip member with this name, advertising this
// certificate serial and NotBefore, is revoked by the list the node holds.
func (n *Node) memberRevoked(name, serial string, issued time.Time) (meta.Revocation, bool) {
	if name == n.cfg.ID {
		return meta.Revocation{}, false // refusing itself would help no one
	}
	return meta.Revoked(n.sec.rev.Load().Revocations, serial, name, issued)
}

// loadCA reads a CA certificate and its key (the dev cluster's root, which stays in its
// directory; production nodes never hold it).
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
		return nil, fmt.Errorf("node: CA: %w", err)
	}
	return ca, nil
}

// loadIssuer reads a meta server's issuing CA (its certificate, signed by the cluster
// root in rootFile, and its key). A missing certificate file (not signed yet) gives nil
// and no error; a missing key or a certificate the root did not sign is an error.
func loadIssuer(rootFile, certFile, keyFile string) (*pki.CA, error) {
	cert, err := os.ReadFile(certFile)
	if errors.Is(err, os.ErrNotExist) {
		if _, kerr := os.Stat(keyFile); kerr != nil {
			return nil, fmt.Errorf("node: issuer key: %w", kerr)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: issuer: %w", err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("node: issuer key: %w", err)
	}
	root, err := os.ReadFile(rootFile)
	if err != nil {
		return nil, fmt.Errorf("node: CA: %w", err)
	}
	ca, err := pki.LoadIssuer(root, cert, key)
	if err != nil {
		return nil, fmt.Errorf("node: issuer %s: %w", certFile, err)
	}
	return ca, nil
}

// joinInfo is what this meta node hands a joining node: the cluster secret and gossip
// seeds: its own gossip address, its seeds, and every meta server members (its gossip
// view) has alive. A node whose only seed is cut off when it restarts would otherwise
// join nobody but that server (chaos run 8989).
func joinInfo(cfg Config, secret []byte, members []meta.Member) meta.JoinInfo {
	seeds := []string{cfg.Gossip}
	for _, j := range cfg.Join {
		if !slices.Contains(seeds, j) {
			seeds = append(seeds, j)
		}
	}
	for _, m := range members {
		if m.State == "alive" && slices.Contains(m.Roles, string(RoleMeta)) && m.Addr != "" && !slices.Contains(seeds, m.Addr) {
			seeds = append(seeds, m.Addr)
		}
	}
	return meta.JoinInfo{ClusterSecret: bytes.Clone(secret), GossipSeeds: seeds}
}

// RevocationVersion returns the version (the Seq of the newest revocation) of the list
// this node enforces: 0 while there is none.
func (n *Node) RevocationVersion() uint64 { return n.sec.rev.Load().Version }

// RevocationCurrent reports whether the node has read from the meta leader a revocation
// list at least as new as the one it persisted before its start: until then it serves
// only cluster nodes.
func (n *Node) RevocationCurrent() bool { return n.sec.rev.Load().current }

// loadPlatformKey reads the platform key file: an age identity file holding exactly one
// X25519 identity. Errors name the file, never the key.
func loadPlatformKey(path string) (*age.X25519Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("node: platform key: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("node: platform key %s: not an age identity file: %w", path, err)
	}
	if len(ids) != 1 {
		return nil, fmt.Errorf("node: platform key %s: %d identities, want exactly one", path, len(ids))
	}
	x, ok := ids[0].(*age.X25519Identity)
	if !ok {
		return nil, fmt.Errorf("node: platform key %s: not an X25519 identity", path)
	}
	return x, nil
}
