package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cofferhq/coffer/client"
)

// progressLine draws one updating status line on a terminal: elapsed time, files,
// bytes, throughput and the current path. Updates are throttled to a few per second.
// It is safe for concurrent use (the agent may report from several goroutines).
type progressLine struct {
	w     io.Writer
	now   func() time.Time
	width int

	mu struct {
		sync.Mutex
		start, last time.Time
		drawn       bool
	}
}

// progressInterval is the minimum time between redraws.
const progressInterval = 150 * time.Millisecond

// newProgress returns a progress reporter for a, or nil when stderr is not a terminal,
// or with --quiet or --json: then nothing is drawn.
func newProgress(a *app) *progressLine {
	if !a.stderrTTY || a.g.quiet || a.g.json {
		return nil
	}
	p := &progressLine{w: a.stderr, now: a.now, width: terminalWidth(a.stderr)}
	p.mu.start = a.now()
	return p
}

// callback returns the function to hand to the agent, or nil for a nil progressLine.
func (p *progressLine) callback() func(client.Progress) {
	if p == nil {
		return nil
	}
	return p.update
}

func (p *progressLine) update(pr client.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.mu.drawn && now.Sub(p.mu.last) < progressInterval {
		return
	}
	p.mu.last, p.mu.drawn = now, true
	elapsed := now.Sub(p.mu.start)
	line := fmt.Sprintf("[%s] %d files, %d dirs, %s, %s", formatDuration(elapsed), pr.Files, pr.Dirs,
		formatBytes(pr.Bytes), formatRate(pr.Bytes, elapsed.Seconds()))
	if pr.BytesRead > 0 || pr.BytesChanged > 0 || pr.BytesAdded > 0 {
		line += fmt.Sprintf(", read %s, new %s, sent %s", formatBytes(pr.BytesRead), formatBytes(pr.BytesChanged), formatBytes(pr.BytesAdded))
	}
	if pct, eta, ok := estimate(pr, elapsed); ok {
		line += fmt.Sprintf(" of %s (%.0f%%), ETA %s", formatBytes(pr.TotalBytes), pct, formatDuration(eta))
	}
	if pr.Current != "" {
		if room := p.width - len([]rune(line)) - 3; room > 8 {
			line += "  " + truncateMiddle(pr.Current, room)
		}
	}
	// \r returns to column 0; \x1b[K clears the rest of the previous line.
	fmt.Fprintf(p.w, "\r%s\x1b[K", truncateMiddle(line, p.width-1))
}

// done clears the progress line so the summary starts on a clean line.
func (p *progressLine) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.mu.drawn = false
	}
}

// estimate returns the percentage of the scanned total processed and the time left at
// the rate so far; ok is false until the scan is done and something was processed.
func estimate(pr client.Progress, elapsed time.Duration) (pct float64, eta time.Duration, ok bool) {
	if !pr.ScanDone || pr.TotalBytes <= 0 || pr.Bytes <= 0 || elapsed <= 0 {
		return 0, 0, false
	}
	done := min(pr.Bytes, pr.TotalBytes)
	pct = 100 * float64(done) / float64(pr.TotalBytes)
	left := float64(pr.TotalBytes - done)
	eta = time.Duration(left / float64(done) * float64(elapsed))
	return pct, eta.Round(time.Second), true
}

// jsonProgress writes one "status" JSON line about every second while a backup runs
// (--json without -q), restic-style; the summary follows as the last line.
type jsonProgress struct {
	a *app

	mu struct {
		sync.Mutex
		start, last time.Time
		wrote       bool
	}
}

// jsonStatusInterval is the minimum time between two status lines.
const jsonStatusInterval = time.Second

func newJSONProgress(a *app) *jsonProgress {
	if !a.g.json || a.g.quiet {
		return nil
	}
	p := &jsonProgress{a: a}
	p.mu.start = a.now()
	return p
}

func (p *jsonProgress) callback() func(client.Progress) {
	if p == nil {
		return nil
	}
	return p.update
}

func (p *jsonProgress) update(pr client.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.a.now()
	if now.Sub(p.mu.last) < jsonStatusInterval && p.mu.wrote {
		return
	}
	if !p.mu.wrote && now.Sub(p.mu.start) < jsonStatusInterval {
		return // short backups print only their summary
	}
	p.mu.last, p.mu.wrote = now, true
	elapsed := now.Sub(p.mu.start)
	st := statusJSON{
		MessageType:    "status",
		ElapsedS:       elapsed.Seconds(),
		Files:          pr.Files,
		Dirs:           pr.Dirs,
		BytesProcessed: pr.Bytes,
		BytesRead:      pr.BytesRead,
		BytesChanged:   pr.BytesChanged,
		BytesUploaded:  pr.BytesAdded,
		TotalFiles:     pr.TotalFiles,
		TotalBytes:     pr.TotalBytes,
		Current:        pr.Current,
	}
	if pct, eta, ok := estimate(pr, elapsed); ok {
		st.PercentDone, st.ETAS = pct, eta.Seconds()
	}
	_ = writeJSON(p.a.stdout, st) // a broken stdout shows up when the summary is written
}

// statusJSON is one progress line of backup --json.
type statusJSON struct {
	MessageType    string  `json:"message_type"` // "status"
	ElapsedS       float64 `json:"elapsed_s"`
	Files          int64   `json:"files"`
	Dirs           int64   `json:"dirs"`
	BytesProcessed int64   `json:"bytes_processed"`
	BytesRead      int64   `json:"bytes_read"`
	BytesChanged   int64   `json:"bytes_changed"`
	BytesUploaded  int64   `json:"bytes_uploaded"`
	TotalFiles     int64   `json:"total_files"` // found by the scan so far
	TotalBytes     int64   `json:"total_bytes"`
	PercentDone    float64 `json:"percent_done,omitempty"` // once the scan is done
	ETAS           float64 `json:"eta_s,omitempty"`
	Current        string  `json:"current,omitempty"`
}
