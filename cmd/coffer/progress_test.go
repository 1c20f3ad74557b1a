package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
)

func TestProgressLineShowsBytesAndETA(t *testing.T) {
	a, _, stderr := newTestApp(nil)
	a.stderrTTY = true
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	p := newProgress(a)
	p.width = 200
	now = now.Add(10 * time.Second)
	p.callback()(client.Progress{Files: 5, Bytes: 25 << 20, BytesRead: 5 << 20, BytesChanged: 3 << 20, BytesAdded: 2 << 20,
		TotalFiles: 10, TotalBytes: 100 << 20, ScanDone: true})
	line := stderr.String()
	for _, want := range []string{"read 5.00 MiB, new 3.00 MiB, sent 2.00 MiB", "of 100 MiB (25%), ETA 30.0s"} {
		if !strings.Contains(line, want) {
			t.Errorf("progress line %q lacks %q", line, want)
		}
	}
	// Without a finished scan there is no ETA.
	stderr.Reset()
	now = now.Add(time.Second)
	p.callback()(client.Progress{Files: 5, Bytes: 25 << 20, TotalBytes: 100 << 20})
	if strings.Contains(stderr.String(), "ETA") {
		t.Errorf("ETA before the scan finished: %q", stderr.String())
	}
}

func TestJSONProgressLines(t *testing.T) {
	a, stdout, _ := newTestApp(nil)
	a.g.json = true
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	p := newJSONProgress(a)
	cb := p.callback()
	pr := client.Progress{Files: 2, Dirs: 1, Bytes: 50, BytesRead: 40, BytesChanged: 30, BytesAdded: 20,
		TotalFiles: 4, TotalBytes: 100, ScanDone: true, Current: "/x"}
	for _, d := range []time.Duration{500 * time.Millisecond, time.Second, 200 * time.Millisecond, 900 * time.Millisecond} {
		now = now.Add(d)
		cb(pr)
	}
	// At 0.5s: nothing (short backups print only the summary); 1.5s: a line; 1.7s:
	// throttled; 2.6s: a line.
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d status lines, want 2: %q", len(lines), stdout.String())
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &st); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"message_type": "status", "elapsed_s": 1.5, "files": 2.0, "dirs": 1.0, "bytes_processed": 50.0,
		"bytes_read": 40.0, "bytes_changed": 30.0, "bytes_uploaded": 20.0, "total_files": 4.0, "total_bytes": 100.0,
		"percent_done": 50.0, "eta_s": 2.0, "current": "/x"}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("status %s = %v, want %v", k, st[k], v)
		}
	}
	a.g.quiet = true
	if newJSONProgress(a) != nil {
		t.Error("status lines with -q")
	}
	a.g.quiet, a.g.json = false, false
	if newJSONProgress(a) != nil {
		t.Error("status lines without --json")
	}
}
