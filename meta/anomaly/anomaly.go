// Package anomaly flags a backup job whose figures fall far outside its host and
// policy's own history: mean ± Sigma standard deviations over the last Window jobs, once
// at least MinHistory of them are known. A sudden jump in bytes added, files changed,
// new or deleted, or duration, or a drop in the compression ratio of the new data, is a
// ransomware sign (encrypted files are rewritten and no longer compress).
//
// Each metric is checked on the side that signals trouble only (more bytes, more files,
// longer, less compressible), and a deviation must also exceed the metric's floor (an
// absolute amount and a share of the mean), so that a history of identical runs (σ = 0)
// does not flag a job for one more changed file. The package is pure and deterministic:
// no clock, no randomness; the same history gives the same flags.
package anomaly

import (
	"fmt"
	"math"
	"strings"
)

// Sample is one job's figures.
type Sample struct {
	BytesAdded   float64 // bytes stored by the job (sealed, after compression)
	FilesNew     float64
	FilesChanged float64
	FilesDeleted float64 // files of the previous job that are gone
	Duration     float64 // seconds
	// Ratio is the compression ratio of the job's new data (plaintext bytes / stored
	// bytes); 0 when the job stored nothing or did not report it.
	Ratio float64
}

// Config sets the test. Zero fields take the defaults.
type Config struct {
	MinHistory int     // jobs needed before anything is flagged; default (and minimum) 5
	Window     int     // newest jobs of the history used; default 20
	Sigma      float64 // deviations from the mean that flag; default 2
}

func (c Config) withDefaults() Config {
	if c.MinHistory < 5 {
		c.MinHistory = 5
	}
	if c.Window <= 0 {
		c.Window = 20
	}
	c.Window = max(c.Window, c.MinHistory)
	if c.Sigma <= 0 {
		c.Sigma = 2
	}
	return c
}

// Flag is one metric outside its history.
type Flag struct {
	Metric string  // "bytes added", "files changed", ..., "compression ratio"
	Value  float64 // the job's
	Mean   float64 // of the history
	StdDev float64 // of the history (population)
	Reason string  // "bytes added 41x the mean", "compression ratio 1.01 vs 2.6"
}

// metric describes one checked figure.
type metric struct {
	name  string
	get   func(Sample) float64
	low   bool    // flag values below the band (compression ratio), not above
	floor float64 // the smallest absolute deviation that flags
	share float64 // the smallest deviation as a share of the mean that flags
	unit  func(float64) string
	known func(Sample) bool // whether the sample has the figure
}

func metrics() []metric {
	count := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	always := func(Sample) bool { return true }
	return []metric{
		{name: "bytes added", get: func(s Sample) float64 { return s.BytesAdded }, floor: 1 << 20, share: 1, unit: bytesText, known: always},
		{name: "files changed", get: func(s Sample) float64 { return s.FilesChanged }, floor: 20, share: 1, unit: count, known: always},
		{name: "files new", get: func(s Sample) float64 { return s.FilesNew }, floor: 20, share: 1, unit: count, known: always},
		{name: "files deleted", get: func(s Sample) float64 { return s.FilesDeleted }, floor: 20, share: 1, unit: count, known: always},
		{name: "duration", get: func(s Sample) float64 { return s.Duration }, floor: 60, share: 1, unit: func(v float64) string { return fmt.Sprintf("%.0fs", v) }, known: always},
		{name: "compression ratio", get: func(s Sample) float64 { return s.Ratio }, low: true, floor: 0.2, share: 0.25,
			unit: func(v float64) string { return fmt.Sprintf("%.2g", v) }, known: func(s Sample) bool { return s.Ratio > 0 }},
	}
}

// Check compares cur with history (oldest first; only the newest cfg.Window are used)
// and returns the metrics outside mean ± Sigma·σ and beyond their floors, in a fixed
// order. A metric needs cfg.MinHistory known values in the window.
func Check(history []Sample, cur Sample, cfg Config) []Flag {
	cfg = cfg.withDefaults()
	if len(history) > cfg.Window {
		history = history[len(history)-cfg.Window:]
	}
	var flags []Flag
	for _, m := range metrics() {
		if !m.known(cur) {
			continue
		}
		var vals []float64
		for _, s := range history {
			if m.known(s) {
				vals = append(vals, m.get(s))
			}
		}
		if len(vals) < cfg.MinHistory {
			continue
		}
		mean, sd := meanStd(vals)
		v := m.get(cur)
		dev := v - mean
		if m.low {
			dev = -dev
		}
		if dev <= cfg.Sigma*sd || dev <= m.floor || dev <= m.share*math.Abs(mean) {
			continue
		}
		flags = append(flags, Flag{Metric: m.name, Value: v, Mean: mean, StdDev: sd, Reason: reason(m, v, mean)})
	}
	return flags
}

// reason says how far off the value is: "41x the mean" for a large multiple, else the
// value against the mean ("compression ratio 1.01 vs 2.6").
func reason(m metric, v, mean float64) string {
	if !m.low && mean > 0 && v/mean >= 3 {
		return fmt.Sprintf("%s %.0fx the mean", m.name, v/mean)
	}
	return fmt.Sprintf("%s %s vs %s", m.name, m.unit(v), m.unit(mean))
}

// Reason joins the flags' reasons ("bytes added 41x the mean; compression ratio 1.01
// vs 2.6"); "" when there are none.
func Reason(flags []Flag) string {
	rs := make([]string, len(flags))
	for i, f := range flags {
		rs[i] = f.Reason
	}
	return strings.Join(rs, "; ")
}

// meanStd returns the mean and the population standard deviation of vals (non-empty).
func meanStd(vals []float64) (mean, sd float64) {
	for _, v := range vals {
		mean += v
	}
	mean /= float64(len(vals))
	var ss float64
	for _, v := range vals {
		ss += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(ss / float64(len(vals)))
}

func bytesText(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
