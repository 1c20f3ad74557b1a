package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// TestEnrollLimiter: failed attempts are allowed in a burst per source and in all, then
// refused with ErrDenied saying from where and how long to wait, the first refusal
// flagged for the log; allowances refill with time, and the sources tracked stay bounded.
func TestEnrollLimiter(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	l := newEnrollLimiter(t0)
	for i := range enrollSourceBurst {
		if _, err := l.take("192.0.2.1", t0); err != nil {
			t.Fatalf("attempt %d within the burst: %v", i+1, err)
		}
	}
	first, err := l.take("192.0.2.1", t0)
	if !errors.Is(err, meta.ErrDenied) || !first || !strings.Contains(err.Error(), "from 192.0.2.1; try again in 30s") {
		t.Fatalf("attempt past the burst: first=%v %v, want the first ErrDenied naming the source and 30s", first, err)
	}
	if first, err := l.take("192.0.2.1", t0.Add(15*time.Second)); err == nil || first || !strings.Contains(err.Error(), "try again in 15s") {
		t.Fatalf("second refusal: first=%v %v, want not first, 15s to wait", first, err)
	}
	if _, err := l.take("192.0.2.2", t0); err != nil {
		t.Fatalf("another source: %v", err)
	}
	t1 := t0.Add(enrollSourceEvery)
	if _, err := l.take("192.0.2.1", t1); err != nil {
		t.Fatalf("after one refill period: %v", err)
	}
	if first, err := l.take("192.0.2.1", t1); err == nil || !first {
		t.Fatalf("refused again after an allowed attempt: first=%v %v, want a first refusal", first, err)
	}

	// All sources together: enrollGlobalBurst attempts, then one per enrollGlobalEvery.
	g := newEnrollLimiter(t0)
	for i := range enrollGlobalBurst {
		if _, err := g.take(fmt.Sprintf("198.51.100.%d", i), t0); err != nil {
			t.Fatalf("global attempt %d: %v", i+1, err)
		}
	}
	if _, err := g.take("203.0.113.9", t0); !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "from all addresses; try again in 5s") {
		t.Fatalf("past the global burst: %v, want ErrDenied for all addresses, 5s", err)
	}
	if _, err := g.take("203.0.113.9", t0.Add(enrollGlobalEvery)); err != nil {
		t.Fatalf("after a global refill period: %v", err)
	}

	// Tracked sources are bounded: past the cap, sources whose allowance is whole again
	// are dropped; while none is, a new source is held by the global limit alone.
	c := newEnrollLimiter(t0)
	for i := range enrollMaxSources {
		c.global.tokens = enrollGlobalBurst
		if _, err := c.take(fmt.Sprintf("src-%d", i), t0); err != nil {
			t.Fatal(err)
		}
	}
	c.global.tokens = enrollGlobalBurst
	if _, err := c.take("one-more", t0); err != nil || len(c.sources) != enrollMaxSources {
		t.Fatalf("a source past the cap: %v, %d tracked, want allowed and %d tracked", err, len(c.sources), enrollMaxSources)
	}
	if _, err := c.take("later", t0.Add(enrollSourceBurst*enrollSourceEvery)); err != nil || len(c.sources) != 1 {
		t.Fatalf("once every allowance is whole: %v, %d tracked, want 1", err, len(c.sources))
	}
}

func TestSourceOf(t *testing.T) {
	for from, want := range map[string]string{
		"192.0.2.1:4433":    "192.0.2.1",
		"[2001:db8::1]:44":  "2001:db8::1",
		"":                  "(unknown address)",
		"host-without-port": "host-without-port",
	} {
		if got := sourceOf(from); got != want {
			t.Errorf("sourceOf(%q) = %q, want %q", from, got, want)
		}
	}
}
