package node

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// partition cuts the members on some loopback addresses off from the rest.
type partition struct {
	mu  sync.Mutex
	cut map[string]bool // IP -> on the cut-off side
}

func (p *partition) set(cut ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = map[string]bool{}
	for _, ip := range cut {
		p.cut[ip] = true
	}
}

func (p *partition) blocked(from, to string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut[from] != p.cut[to]
}

// cutTransport is memberlist's UDP/TCP transport, dropping what crosses the partition:
// packets vanish and stream dials fail, as on a disconnected container network.
type cutTransport struct {
	memberlist.Transport
	ip string
	p  *partition
}

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if host, _, _ := net.SplitHostPort(addr); t.p.blocked(t.ip, host) {
		return time.Now(), nil
	}
	return t.Transport.WriteTo(b, addr)
}

func (t *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if host, _, _ := net.SplitHostPort(addr); t.p.blocked(t.ip, host) {
		return nil, fmt.Errorf("%s -> %s: partitioned", t.ip, addr)
	}
	return t.Transport.DialTimeout(addr, timeout)
}

// TestGossipHealsAfterPartition is chaos run 8989 in one process: the seed every other
// member joined through is cut off long enough for both sides to declare each other
// dead and forget each other; while it is cut off a member restarts and joins through
// it alone. After the partition heals, every member sees every other alive again (the
// meta leader's failure detection follows this view; a member held dead stays down in
// the cluster map, and reads skip it). memberlist alone never reconnects the two
// sides: with maintain's reconnect rounds off, this test fails.
func TestGossipHealsAfterPartition(t *testing.T) {
	p := &partition{}
	p.set()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	serial := int64(0)
	start := func(name, ip string, seeds []string) *gossip {
		t.Helper()
		serial++
		leaf := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now()}
		none := func(string, string, time.Time) (meta.Revocation, bool) { return meta.Revocation{}, false }
		tune := func(mc *memberlist.Config) {
			nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{ip}, Logger: mc.Logger})
			if err != nil {
				t.Fatal(err)
			}
			mc.Transport = &cutTransport{Transport: nt, ip: ip, p: p}
			mc.AdvertisePort = nt.GetAutoBindPort()
			mc.ProbeInterval, mc.ProbeTimeout = 100*time.Millisecond, 100*time.Millisecond
			mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = 2, 2
			mc.GossipInterval, mc.GossipToTheDeadTime = 50*time.Millisecond, 300*time.Millisecond
			mc.PushPullInterval, mc.TCPTimeout = 300*time.Millisecond, time.Second
		}
		cfg := Config{ID: name, Gossip: ip + ":0", Join: seeds, Roles: []Role{RoleChunk}}
		g, err := startGossipTuned(cfg, ip+":1", []byte("secret"), leaf, none, time.Now, slog.New(slog.DiscardHandler), tune)
		if err != nil {
			t.Fatal(err)
		}
		g.reconnect = 200 * time.Millisecond
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.maintain(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			wg.Wait()
			_ = g.leave(false)
		})
		return g
	}
	seed := start("seed", "127.0.0.1", nil)
	seedAddr := seed.ml.LocalNode().Address()
	a := start("a", "127.0.0.2", []string{seedAddr})
	b := start("b", "127.0.0.3", []string{seedAddr})
	waitGossip(t, "every member sees the others alive", func() bool {
		return seed.liveness("a") == placement.LiveAlive && seed.liveness("b") == placement.LiveAlive &&
			a.liveness("b") == placement.LiveAlive && b.liveness("seed") == placement.LiveAlive
	})

	p.set("127.0.0.1", "127.0.0.4")
	// The partition holds until each side has held the other dead for 1.5 s: five times
	// GossipToTheDeadTime, after which memberlist forgets a dead member at its next probe
	// round (every 100-300 ms here) and never sends it anything again.
	deadFor := func(g *gossip, other string) bool {
		g.events.mu.Lock()
		defer g.events.mu.Unlock()
		m, ok := g.events.mu.state[other]
		return ok && m.State == "dead" && time.Since(m.since) > 1500*time.Millisecond
	}
	waitGossip(t, "both sides to declare the other dead and forget it", func() bool {
		return deadFor(seed, "a") && deadFor(seed, "b") && deadFor(a, "seed") && deadFor(b, "seed")
	})
	c := start("c", "127.0.0.4", []string{seedAddr}) // restarts during the partition
	waitGossip(t, "the restarted member to join through the cut-off seed", func() bool {
		return seed.liveness("c") == placement.LiveAlive && c.liveness("seed") == placement.LiveAlive
	})

	p.set()
	waitGossip(t, "every member to see every other alive after the partition heals", func() bool {
		for _, g := range []*gossip{seed, a, b, c} {
			for _, other := range []placement.NodeID{"seed", "a", "b", "c"} {
				if other != placement.NodeID(g.ml.LocalNode().Name) && g.liveness(other) != placement.LiveAlive {
					return false
				}
			}
		}
		return true
	})
}

// waitGossip polls cond (memberlist runs on its own goroutines and timers) for up to
// 30 s.
func waitGossip(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gossip: after 30 s, still waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
