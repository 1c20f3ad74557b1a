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
