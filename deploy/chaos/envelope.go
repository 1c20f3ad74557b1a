package chaos

import (
	"sort"
	"time"
)

// Envelope is what the 4+2 cluster of deploy/compose.yaml is meant to absorb: at most
// MaxChunks chunk nodes and MaxMeta meta servers down, paused, cut off or full at once. A
// fault's nodes count until Settle after they were seen up again: admin status (the meta
// leader's view) sees a node back a few seconds before every coordinator's gossip does.
type Envelope struct {
	MaxChunks int
	MaxMeta   int
	Settle    time.Duration
}

// DefaultEnvelope is issue 14's: ≤ 2 chunk nodes and ≤ 1 meta server, with 5 s to settle.
func DefaultEnvelope() Envelope { return Envelope{MaxChunks: 2, MaxMeta: 1, Settle: 5 * time.Second} }

// Window is an injected fault as it happened: the nodes it took away, from the moment
// it began until the nodes were seen serving again (Recovered), offsets from the run's
// start.
type Window struct {
	ID        int
	Kind      Kind
	Chunks    []string
	Meta      []string
	Start     time.Duration
	Recovered time.Duration
}

// Exposure is what a backup attempt ran through: the most chunk nodes and meta servers
// faulted at any one instant of [start, end], and the faults that overlapped it.
type Exposure struct {
	MaxChunks int
	MaxMeta   int
	Faults    []int // Window IDs
	Inside    bool
}

// Expose computes the exposure of an operation running over [start, end] to windows.
func (e Envelope) Expose(windows []Window, start, end time.Duration) Exposure {
	var x Exposure
	// Active windows at an instant are those with Start ≤ t ≤ Recovered; the maximum of a
	// step function over [start, end] is reached at start or at some window's Start.
	instants := []time.Duration{start}
	for _, w := range windows {
		if w.Start <= end && w.Recovered+e.Settle >= start {
			x.Faults = append(x.Faults, w.ID)
			if w.Start > start {
				instants = append(instants, w.Start)
			}
		}
	}
	sort.Ints(x.Faults)
	for _, t := range instants {
		chunks, meta := map[string]bool{}, map[string]bool{}
		for _, w := range windows {
			if w.Start <= t && t <= w.Recovered+e.Settle {
				for _, c := range w.Chunks {
					chunks[c] = true
				}
				for _, m := range w.Meta {
					meta[m] = true
				}
			}
		}
		x.MaxChunks = max(x.MaxChunks, len(chunks))
		x.MaxMeta = max(x.MaxMeta, len(meta))
	}
	x.Inside = x.MaxChunks <= e.MaxChunks && x.MaxMeta <= e.MaxMeta
	return x
}
