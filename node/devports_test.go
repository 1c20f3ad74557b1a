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
		p, err := pickPort("127.0.0.1", true, true, &held)
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
