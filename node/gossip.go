package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport/pki"
)

// gossipMeta is what a node advertises in memberlist's NodeMeta (≤ 512 bytes).
type gossipMeta struct {
	Addr   string `json:"a"`
	Roles  []Role `json:"r"`
	Domain string `json:"d"`
	// Serial and Issued (Unix seconds) are the node certificate's serial and NotBefore,
	// which revocations are matched against (memberRevoked). Self-declared: gossip is
	// keyed by the cluster secret, not certificates (see revokedFunc).
	Serial string `json:"s,omitempty"`
	Issued int64  `json:"i,omitempty"`
}

// revokedFunc reports whether a gossip member (name, advertised certificate serial and
// NotBefore) is revoked by the node's revocation list.
//
// NB: gossip messages are authenticated by the cluster secret alone, so what a member
// advertises is its own word: the filter stops a revoked node running this software (its
// name and certificate are refused by principal or serial), not a holder of the cluster
// secret forging messages. Every request that matters (shards, meta, repair) goes over
// the certificate-checked transport, where the revocation is enforced for certain.
type revokedFunc func(name, serial string, issued time.Time) (meta.Revocation, bool)

// memberInfo decodes what m advertises (zero values when it does not parse: a member
// that says nothing is matched by name alone, so a principal revocation still applies).
func memberInfo(m *memberlist.Node) (serial string, issued time.Time) {
	gm := memberMeta(m)
	if gm.Issued != 0 {
		issued = time.Unix(gm.Issued, 0)
	}
	return gm.Serial, issued
}

// memberMeta decodes what m advertises (the zero value when it does not parse).
func memberMeta(m *memberlist.Node) gossipMeta {
	var gm gossipMeta
	if json.Unmarshal(m.Meta, &gm) != nil {
		return gossipMeta{}
	}
	return gm
}

// gossipAlive is memberlist's AliveDelegate: an alive message (a join, a refutation, or
// one member of a push/pull merge: memberlist's mergeState passes each through it) for a
// revoked member is refused, so no node adds it to its member list.
//
// NB: no MergeDelegate: refusing a whole merge because the remote state lists a revoked
// member would also refuse honest nodes whose peers still remember it.
type gossipAlive struct {
	revoked revokedFunc
	log     *slog.Logger
}

func (a gossipAlive) NotifyAlive(m *memberlist.Node) error {
	serial, issued := memberInfo(m)
	if r, ok := a.revoked(m.Name, serial, issued); ok {
		a.log.Warn("gossip: refused a revoked member", "member", m.Name, "serial", serial, "revoked_seq", r.Seq)
		return fmt.Errorf("node: gossip: member %s (certificate serial %q) is revoked (revocation %d at %s by %s)",
			m.Name, serial, r.Seq, r.At.Format(time.RFC3339), r.By)
	}
	return nil
}

// gossip wraps a memberlist instance: failure detection and discovery.
type gossip struct {
	ml      *memberlist.Memberlist
	events  *gossipEvents
	revoked revokedFunc
	seeds   []string
	log     *slog.Logger
	joined  atomic.Bool // a seed answered a join
	// reconnect is how often maintain looks for members to reconnect (gossipReconnect).
	reconnect time.Duration
}

// gossipEvents records the last known state of every member ever seen. memberlist calls
// it from its own goroutines; it must not block.
type gossipEvents struct {
	now func() time.Time
	mu  struct {
		sync.Mutex
		state map[string]member
	}
}

// member is the last known state of one member and the certificate it advertises.
type member struct {
	meta.Member
	serial string
	issued time.Time
	// since is when State last changed (the gossip clock).
	since time.Time
}

func (e *gossipEvents) set(n *memberlist.Node, st string) {
	serial, issued := memberInfo(n)
	gm := memberMeta(n)
	var roles []string
	for _, r := range gm.Roles {
		roles = append(roles, string(r))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.state == nil {
		e.mu.state = map[string]member{}
	}
	since := e.now()
	if old, ok := e.mu.state[n.Name]; ok && old.State == st {
		since = old.since
	}
	e.mu.state[n.Name] = member{Member: meta.Member{Name: n.Name, Addr: n.Address(), State: st,
		RPCAddr: gm.Addr, Roles: roles, Domain: gm.Domain}, serial: serial, issued: issued, since: since}
}

func (e *gossipEvents) NotifyJoin(n *memberlist.Node)   { e.set(n, "alive") }
func (e *gossipEvents) NotifyUpdate(n *memberlist.Node) { e.set(n, "alive") }

// NotifyLeave records a member that left or was declared dead. NB: memberlist passes the
// node with whatever State it had before (often still alive), so the event itself is
// the signal; StateLeft, when set, tells a graceful leave from a failure.
func (e *gossipEvents) NotifyLeave(n *memberlist.Node) {
	st := "dead"
	if n.State == memberlist.StateLeft {
		st = "left"
	}
	e.set(n, st)
}

// gossipDelegate implements memberlist.Delegate; it only advertises node metadata.
type gossipDelegate struct{ meta []byte }

func (d gossipDelegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}
func (gossipDelegate) NotifyMsg([]byte)                           {}
func (gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (gossipDelegate) LocalState(join bool) []byte                { return nil }
func (gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// slogWriter adapts memberlist's log.Logger output to slog at debug level (warnings and
// errors at their own level).
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	switch {
	case bytes.Contains(p, []byte("[ERR]")):
		w.l.Error(msg)
	case bytes.Contains(p, []byte("[WARN]")):
		w.l.Warn(msg)
	default:
		w.l.Debug(msg)
	}
	return len(p), nil
}

// gossipPushPull is how often a member exchanges its whole member list with another
// (memberlist's LAN default is 30 s). memberlist probes only members it believes alive,
// so a member that was cut off and declared the others dead learns that they are alive
// from a push/pull, or from their own refutation reaching it. With 30 s that took 25 s
// after a partition of the meta leader healed (chaos run 9191): the next leader, that
// server, then marked three live chunk nodes down, and its commit checks did not ask
// them (coord.Has skips nodes marked down), refusing two backups. A full exchange of a
// few dozen members is a few KB; every 5 s it bounds such a stale view to about 5 s.
const gossipPushPull = 5 * time.Second

// gossipReconnect is how often a member joins again the seeds it does not see alive
// and members it holds dead; gossipReconnectFor is how long after a member's death it
// keeps trying (serf's reconnect, which memberlist alone does not have: see maintain).
// gossipReconnectMax bounds the dead members tried per round.
const (
	gossipReconnect    = 10 * time.Second
	gossipReconnectFor = 24 * time.Hour
	gossipReconnectMax = 3
)

// startGossip creates the memberlist member for this node and joins the seeds. Joining
// fails softly: a node whose seeds are not up yet is still usable and is found by the
// others when they start.
//
// leaf is this node's certificate (advertised for revocation checks); revoked decides
// which members are refused and not counted alive.
func startGossip(cfg Config, advertise string, secret []byte, leaf *x509.Certificate, revoked revokedFunc, now func() time.Time, logger *slog.Logger) (*gossip, error) {
	return startGossipTuned(cfg, advertise, secret, leaf, revoked, now, logger, nil)
}

// startGossipTuned is startGossip with tune, when not nil, applied to memberlist's
// configuration last (tests: faster timers, a transport that partitions).
func startGossipTuned(cfg Config, advertise string, secret []byte, leaf *x509.Certificate, revoked revokedFunc, now func() time.Time, logger *slog.Logger, tune func(*memberlist.Config)) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(cfg.Gossip)
	if err != nil {
		return nil, fmt.Errorf("node: gossip address %q: %w", cfg.Gossip, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("node: gossip port %q: %w", portStr, err)
	}
	md, err := json.Marshal(gossipMeta{Addr: advertise, Roles: cfg.Roles, Domain: cfg.Domain,
		Serial: pki.SerialString(leaf.SerialNumber), Issued: leaf.NotBefore.Unix()})
	if err != nil {
		return nil, fmt.Errorf("node: gossip meta: %w", err)
	}
	mc := memberlist.DefaultLANConfig()
	// A loaded machine delays probe answers past memberlist's LAN defaults (500 ms probe
	// timeout, 4 s minimum suspicion for 10 members): the chaos suite, 10 nodes on 2
	// cores at a load average of 20-40, saw live nodes declared dead. Twice the probe
	// timeout and 6 s of suspicion keep a killed node's detection near 10 s.
	mc.ProbeTimeout = time.Second
	mc.SuspicionMult = 6
	mc.PushPullInterval = gossipPushPull
	mc.Name = cfg.ID
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertiseAddr = host
	mc.AdvertisePort = port
	key := sha256.Sum256(append([]byte("coffer gossip v1\x00"), secret...))
	mc.SecretKey = key[:]
	mc.Delegate = gossipDelegate{meta: md}
	mc.Alive = gossipAlive{revoked: revoked, log: logger}
	events := &gossipEvents{now: now}
	mc.Events = events
	mc.LogOutput = nil
	mc.Logger = log.New(slogWriter{l: logger.With("component", "gossip")}, "", 0)
	if tune != nil {
		tune(mc)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("node: gossip: %w", err)
	}
	var seeds []string
	for _, s := range cfg.Join {
		if s != cfg.Gossip {
			seeds = append(seeds, s)
		}
	}
	g := &gossip{ml: ml, events: events, revoked: revoked, seeds: seeds, log: logger, reconnect: gossipReconnect}
	if len(seeds) > 0 {
		if n, err := ml.Join(seeds); err != nil || n == 0 {
			logger.Info("gossip join incomplete; retrying in the background", "err", err)
		} else {
			g.joined.Store(true)
		}
	}
	return g, nil
}

// maintain keeps this member connected to the cluster until ctx is done. Until a seed
// answers it joins the seeds every 2 s: a node that started before every seed would
// otherwise stay unknown to them (and to the meta leader's failure detection) until some
// other member happened to gossip about it. After that, every g.reconnect it joins again
// the seeds it does not see alive and up to gossipReconnectMax members it holds dead
// (not left, not revoked, dead for less than gossipReconnectFor), each in its own
// goroutine so that one unreachable address does not hold up the others.
//
// NB: memberlist probes, and exchanges state with, only members it believes alive, and
// forgets a dead one after GossipToTheDeadTime. A partition long enough for both sides
// to declare each other dead leaves two islands that never speak again (chaos run 8989:
// the meta leader was cut off while two chunk nodes restarted and joined through it;
// the next leader never saw them alive again, kept them down in the map, and reads
// skipped them). A join is a full state exchange: the side that finds itself listed
// dead refutes with a higher incarnation, and the next round carries that across.
func (g *gossip) maintain(ctx context.Context) {
	if len(g.seeds) > 0 && !g.joined.Load() {
		t := time.NewTicker(2 * time.Second)
		for !g.joined.Load() {
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if n, err := g.ml.Join(g.seeds); err == nil && n > 0 {
				g.joined.Store(true)
				g.log.Info("gossip joined", "seeds", n)
			}
		}
		t.Stop()
	}
	t := time.NewTicker(g.reconnect)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, addr := range g.reconnectTargets() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if n, err := g.ml.Join([]string{addr}); err == nil && n > 0 {
					g.log.Info("gossip reconnected to a member it did not see alive", "addr", addr)
				}
			}()
		}
	}
}

// reconnectTargets returns the gossip addresses maintain joins this round: the seeds no
// member alive in memberlist's view has, then up to gossipReconnectMax members the
// events hold dead, chosen at random.
func (g *gossip) reconnectTargets() []string {
	live := map[string]bool{}
	for _, m := range g.ml.Members() {
		if m.State == memberlist.StateAlive || m.State == memberlist.StateSuspect {
			live[m.Address()] = true
		}
	}
	self := g.ml.LocalNode().Address()
	var out []string
	for _, s := range g.seeds {
		if !live[s] && s != self && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	now := g.events.now()
	var dead []string
	g.events.mu.Lock()
	for _, m := range g.events.mu.state {
		if m.State == "dead" && !g.isRevoked(m) && now.Sub(m.since) < gossipReconnectFor &&
			!live[m.Addr] && m.Addr != self && !slices.Contains(out, m.Addr) {
			dead = append(dead, m.Addr)
		}
	}
	g.events.mu.Unlock()
	rand.Shuffle(len(dead), func(i, j int) { dead[i], dead[j] = dead[j], dead[i] })
	if len(dead) > gossipReconnectMax {
		dead = dead[:gossipReconnectMax]
	}
	return append(out, dead...)
}

// isRevoked reports whether m is revoked by the node's list (events' lock held).
func (g *gossip) isRevoked(m member) bool {
	_, ok := g.revoked(m.Name, m.serial, m.issued)
	return ok
}

// alive reports whether gossip considers id alive (or suspect). Members never seen count
// as alive so that a node starting before its peers still tries them; a member whose
// certificate is revoked (or, never seen, whose name is revoked by principal) never does.
func (g *gossip) alive(id placement.NodeID) bool {
	g.events.mu.Lock()
	defer g.events.mu.Unlock()
	m, ok := g.events.mu.state[string(id)]
	if !ok {
		_, revoked := g.revoked(string(id), "", time.Time{})
		return !revoked
	}
	return !g.isRevoked(m) && (m.State == "alive" || m.State == "suspect")
}

// liveness reports gossip's view of id for the meta leader: alive (or suspect), dead
// (failed, left, or revoked), or unknown when never seen.
func (g *gossip) liveness(id placement.NodeID) placement.Liveness {
	g.events.mu.Lock()
	defer g.events.mu.Unlock()
	m, ok := g.events.mu.state[string(id)]
	switch {
	case !ok:
		return placement.LiveUnknown
	case g.isRevoked(m):
		return placement.LiveDead
	case m.State == "alive" || m.State == "suspect":
		return placement.LiveAlive
	}
	return placement.LiveDead
}

// candidate reports chunk node id as it advertises itself (QUIC address, failure
// domain) when gossip sees it alive, not revoked, with the chunk role: what `coffer
// admin node add` puts in the map (meta server Config.Candidate).
//
// NB: what a member advertises is its own word (gossip is keyed by the cluster secret,
// see revokedFunc): the admin names the node to add, and every shard exchanged with it
// afterwards goes over the certificate-checked transport.
func (g *gossip) candidate(id placement.NodeID) (placement.Node, bool) {
	g.events.mu.Lock()
	defer g.events.mu.Unlock()
	m, ok := g.events.mu.state[string(id)]
	if !ok || g.isRevoked(m) || m.State != "alive" || m.RPCAddr == "" || !slices.Contains(m.Roles, string(RoleChunk)) {
		return placement.Node{}, false
	}
	return placement.Node{ID: id, Addr: m.RPCAddr, Domain: m.Domain}, true
}

// members reports the gossip view, including dead, left and revoked members, sorted by
// name.
func (g *gossip) members() []meta.Member {
	g.events.mu.Lock()
	defer g.events.mu.Unlock()
	out := make([]meta.Member, 0, len(g.events.mu.state))
	for _, m := range g.events.mu.state {
		mm := m.Member
		if g.isRevoked(m) {
			mm.State = "revoked"
		}
		out = append(out, mm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// leave announces departure (noticed by peers in well under a second) and stops.
func (g *gossip) leave(graceful bool) error {
	if graceful {
		_ = g.ml.Leave(2 * time.Second)
	}
	return g.ml.Shutdown()
}
