package placement

import "testing"

// TestStateAt: a report healthy at an older epoch does not vouch for the PG under the
// current map (unverified); a problem it found still shows; a zero report is unknown.
func TestStateAt(t *testing.T) {
	healthy := PGHealth{PG: 1, Epoch: 3, Reporter: "chunk-1", Stripes: 10, MinHealthy: 6, N: 6}
	degraded := healthy
	degraded.Degraded, degraded.MinHealthy, degraded.Reason = 2, 5, "owner down: chunk-3"
	for _, c := range []struct {
		name  string
		h     PGHealth
		epoch uint64
		state string
		desc  string
	}{
		{"healthy at the epoch", healthy, 3, "healthy", "healthy"},
		{"healthy at an older epoch", healthy, 4, "unverified", "unverified"},
		{"degraded at an older epoch", degraded, 4, "degraded", "degraded (owner down: chunk-3)"},
		{"degraded at the epoch", degraded, 3, "degraded", "degraded (owner down: chunk-3)"},
		{"no report", PGHealth{PG: 1}, 4, "unknown", "unknown"},
	} {
		if got := c.h.StateAt(c.epoch); got != c.state {
			t.Errorf("%s: StateAt(%d) = %q, want %q", c.name, c.epoch, got, c.state)
		}
		if got := c.h.DescribeAt(c.epoch); got != c.desc {
			t.Errorf("%s: DescribeAt(%d) = %q, want %q", c.name, c.epoch, got, c.desc)
		}
	}
}
