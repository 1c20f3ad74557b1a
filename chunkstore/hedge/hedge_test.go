package hedge

import (
	"testing"
	"time"
)

func TestDelayFollowsLatency(t *testing.T) {
	d := New(time.Second)
	if got := d.Get(); got != time.Second {
		t.Fatalf("no observations: %v, want the floor", got)
	}
	for range 100 {
		d.Observe(10 * time.Millisecond)
	}
	if got := d.Get(); got != time.Second {
		t.Fatalf("fast calls: %v, want the floor", got)
	}
	// Everything slows to 2 s (overload): hedging backs off to about 8 s.
	for range 100 {
		d.Observe(2 * time.Second)
	}
	if got := d.Get(); got < 7*time.Second || got > 8*time.Second {
		t.Fatalf("slow calls: %v, want about %v", got, Factor*2*time.Second)
	}
	// Latency recovers: the delay comes back down to the floor.
	for range 200 {
		d.Observe(time.Millisecond)
	}
	if got := d.Get(); got != time.Second {
		t.Fatalf("recovered: %v, want the floor", got)
	}
}
