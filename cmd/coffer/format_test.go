package main

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
)

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{1024, "1.00 KiB"},
		{1536, "1.50 KiB"},
		{10 * 1024, "10.0 KiB"},
		{1023 * 1024, "1023 KiB"},
		{1 << 20, "1.00 MiB"},
		{123456789, "118 MiB"},
		{5 << 30, "5.00 GiB"},
		{3 << 40, "3.00 TiB"},
		{1 << 62, "4.00 EiB"},
		{-2048, "-2.00 KiB"},
	}
	for _, tt := range tests {
		if got := formatBytes(tt.n); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0ms"},
		{350 * time.Millisecond, "350ms"},
		{time.Second, "1.0s"},
		{12340 * time.Millisecond, "12.3s"},
		{59900 * time.Millisecond, "59.9s"},
		{time.Minute, "1:00"},
		{4*time.Minute + 5*time.Second, "4:05"},
		{time.Hour + 2*time.Minute + 3*time.Second, "1:02:03"},
		{26 * time.Hour, "26:00:00"},
		{-2 * time.Second, "-2.0s"},
	}
	for _, tt := range tests {
		if got := formatDuration(tt.d); got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	if got := secondsDuration(1.5); got != 1500*time.Millisecond {
		t.Errorf("secondsDuration(1.5) = %v", got)
	}
}

func TestFormatRate(t *testing.T) {
	tests := []struct {
		bytes int64
		secs  float64
		want  string
	}{
		{100e6, 2, "50.0 MB/s"},
		{1, 1, "0.0 MB/s"},
		{1e9, 0.5, "2000.0 MB/s"},
		{1e6, 0, "- MB/s"},
		{1e6, -1, "- MB/s"},
	}
	for _, tt := range tests {
		if got := formatRate(tt.bytes, tt.secs); got != tt.want {
			t.Errorf("formatRate(%d, %v) = %q, want %q", tt.bytes, tt.secs, got, tt.want)
		}
	}
}

func TestFormatMode(t *testing.T) {
	tests := []struct {
		typ  byte
		mode fs.FileMode
		want string
	}{
		{'-', 0o644, "-rw-r--r--"},
		{'d', fs.ModeDir | 0o755, "drwxr-xr-x"},
		{'-', fs.ModeSetuid | 0o755, "-rwsr-xr-x"},
		{'-', fs.ModeSetuid | 0o644, "-rwSr--r--"},
		{'-', fs.ModeSetgid | 0o755, "-rwxr-sr-x"},
		{'d', fs.ModeSticky | 0o777, "drwxrwxrwt"},
		{'d', fs.ModeSticky | 0o770, "drwxrwx--T"},
		{'l', fs.ModeSymlink | 0o777, "lrwxrwxrwx"},
		{'p', 0, "p---------"},
	}
	for _, tt := range tests {
		if got := formatMode(tt.typ, tt.mode); got != tt.want {
			t.Errorf("formatMode(%c, %v) = %q, want %q", tt.typ, tt.mode, got, tt.want)
		}
	}
}

func TestTruncateMiddle(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"/very/long/path/name", 9, "/ver…name"},
		{"/very/long/path/name", 10, "/ver…/name"},
		{"äöüäöüäöü", 5, "äö…öü"},
		{"abc", 1, "a"},
		{"abc", 0, ""},
	}
	for _, tt := range tests {
		got := truncateMiddle(tt.s, tt.n)
		if got != tt.want {
			t.Errorf("truncateMiddle(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
		if n := len([]rune(got)); n > max(tt.n, 0) {
			t.Errorf("truncateMiddle(%q, %d) has %d runes", tt.s, tt.n, n)
		}
	}
}

func TestProgressOnlyOnTerminal(t *testing.T) {
	a, _, stderr := newTestApp(nil)
	if p := newProgress(a); p != nil || p.callback() != nil {
		t.Fatal("progress drawn without a terminal")
	}
	p := newProgress(a)
	p.done() // nil-safe
	a.stderrTTY = true
	a.g.json = true
	if newProgress(a) != nil {
		t.Error("progress drawn with --json")
	}
	a.g.json, a.g.quiet = false, true
	if newProgress(a) != nil {
		t.Error("progress drawn with --quiet")
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr %q", stderr.String())
	}
}

func TestProgressLineThrottlesAndClears(t *testing.T) {
	a, _, stderr := newTestApp(nil)
	a.stderrTTY = true
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	p := newProgress(a)
	if p == nil {
		t.Fatal("no progress on a terminal")
	}
	cb := p.callback()

	now = now.Add(2 * time.Second)
	cb(client.Progress{Files: 3, Dirs: 1, Bytes: 10e6, Current: "/data/file.bin"})
	first := stderr.String()
	for _, want := range []string{"\r", "[2.0s] 3 files, 1 dirs, 9.54 MiB, 5.0 MB/s", "/data/file.bin", "\x1b[K"} {
		if !strings.Contains(first, want) {
			t.Errorf("progress line %q lacks %q", first, want)
		}
	}
	now = now.Add(progressInterval / 2)
	cb(client.Progress{Files: 4})
	if stderr.String() != first {
		t.Errorf("redrawn within the interval: %q", stderr.String())
	}
	now = now.Add(progressInterval)
	cb(client.Progress{Files: 5})
	if !strings.Contains(stderr.String(), "5 files") {
		t.Errorf("not redrawn after the interval: %q", stderr.String())
	}
	stderr.Reset()
	p.done()
	if stderr.String() != "\r\x1b[K" {
		t.Errorf("done wrote %q", stderr.String())
	}
	stderr.Reset()
	p.done()
	if stderr.Len() != 0 {
		t.Errorf("second done wrote %q", stderr.String())
	}
}

func TestProgressLineFitsWidth(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	p := &progressLine{w: &buf, now: func() time.Time { return now }, width: 60}
	p.mu.start = now
	p.update(client.Progress{Files: 1, Bytes: 1, Current: "/" + strings.Repeat("x", 200)})
	line := strings.TrimSuffix(strings.TrimPrefix(buf.String(), "\r"), "\x1b[K")
	if n := len([]rune(line)); n >= 60 {
		t.Errorf("line has %d runes, want < 60: %q", n, line)
	}
}
