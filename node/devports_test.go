package node

import (
	"io"
	"net"
	"strconv"
	"testing"
)

// TestPickPortBelowEphemeralRange: a dev cluster's ports come from below the kernel's
// ephemeral range (where no outgoing connection can take them between init and a
// restart), and stay reserved on every network asked until the caller lets them go.
func TestPickPortBelowEphemeralRange(t *testing.T) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	lo := ephemeralLow()
	seen := map[int]bool{}
	for range 5 {
		p, err := pickPort("127.0.0.1", true, true, &held, nil)
		if err != nil {
			t.Fatal(err)
		}
		if lo-lowestPickedPort >= 1000 && (p < lowestPickedPort || p >= lo) {
			t.Errorf("port %d outside [%d, %d)", p, lowestPickedPort, lo)
		}
		if seen[p] {
			t.Errorf("port %d picked twice while still held", p)
		}
		seen[p] = true
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			t.Errorf("TCP %s not reserved", addr)
		}
		if u, err := net.ListenPacket("udp", addr); err == nil {
			u.Close()
			t.Errorf("UDP %s not reserved", addr)
		}
	}
	if len(held) != 10 {
		t.Errorf("held %d sockets, want 10 (TCP and UDP for 5 ports)", len(held))
	}
	if _, err := bindPort("127.0.0.1", 0, false, false); err == nil {
		t.Error("bindPort with no network: no error")
	}
}

// TestDevPortHoldKeepsStoppedNodesPorts: a port picked into a hold stays out of every
// other picker's reach after its sockets close (a stopped node), until the hold closes.
func TestDevPortHoldKeepsStoppedNodesPorts(t *testing.T) {
	var held []io.Closer
	hold := NewDevPortHold()
	defer hold.Close()
	p, err := pickPort("127.0.0.1", true, true, &held, hold)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range held {
		c.Close() // the node that bound the port stops
	}
	if got := hold.Ports(); len(got) != 1 || got[0] != p {
		t.Fatalf("hold keeps %v, want [%d]", got, p)
	}
	if f, ok := lockPort(p); ok {
		if f == nil {
			t.Fatalf("no lock directory usable under %s: dev clusters hold no ports", DevPortDir())
		}
		f.Close()
		t.Fatalf("port %d free to another picker while held", p)
	}
	// Another picker, nil hold, picks many ports: never the held one.
	var other []io.Closer
	defer func() {
		for _, c := range other {
			c.Close()
		}
	}()
	for range 20 {
		q, err := pickPort("127.0.0.1", true, true, &other, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q == p {
			t.Fatalf("port %d picked by another picker while held", p)
		}
	}
	if err := hold.Close(); err != nil {
		t.Fatal(err)
	}
	f, ok := lockPort(p)
	if !ok || f == nil {
		t.Fatalf("port %d still held after Close", p)
	}
	f.Close()
	if len(hold.Ports()) != 0 {
		t.Errorf("hold keeps %v after Close", hold.Ports())
	}
}
