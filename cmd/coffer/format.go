package main

import (
	"fmt"
	"io/fs"
	"math"
	"strings"
	"time"
)

// formatBytes renders a byte count with binary units: "512 B", "1.5 KiB", "3.00 GiB".
// Three significant digits are kept above 1 KiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < 0 {
		return "-" + formatBytes(-n)
	}
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n)
	i := -1
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, units[i])
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, units[i])
	default:
		return fmt.Sprintf("%.2f %s", v, units[i])
	}
}

// formatRate renders a throughput in decimal megabytes per second ("85.3 MB/s"); zero
// or negative durations give "-".
func formatRate(bytes int64, seconds float64) string {
	if seconds <= 0 || math.IsNaN(seconds) || math.IsInf(seconds, 0) {
		return "- MB/s"
	}
	return fmt.Sprintf("%.1f MB/s", float64(bytes)/seconds/1e6)
}

// formatDuration renders elapsed time for humans: "350ms", "12.3s", "4:05", "1:02:03".
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + formatDuration(-d)
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	s := int64(d.Round(time.Second) / time.Second)
	h, m, sec := s/3600, (s/60)%60, s%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, sec)
	}
	return fmt.Sprintf("%d:%02d", m, sec)
}

// secondsDuration converts float seconds to a Duration.
func secondsDuration(s float64) time.Duration {
	return time.Duration(s * float64(time.Second))
}

// formatMode renders a permission mode with a type letter, like ls -l: "drwxr-xr-x".
// typ is the entry type's first letter: 'd' directory, 'l' symlink, '-' file, and so on.
func formatMode(typ byte, perm fs.FileMode) string {
	s := (perm & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)).String()
	// fs.FileMode.String puts setuid/setgid/sticky as leading letters; render them in the
	// ls positions instead (s, s, t in the execute columns).
	b := []byte(s[len(s)-9:])
	if perm&fs.ModeSetuid != 0 {
		b[2] = setBit(b[2], 's')
	}
	if perm&fs.ModeSetgid != 0 {
		b[5] = setBit(b[5], 's')
	}
	if perm&fs.ModeSticky != 0 {
		b[8] = setBit(b[8], 't')
	}
	return string(typ) + string(b)
}

func setBit(exec byte, letter byte) byte {
	if exec == 'x' {
		return letter
	}
	return letter - 'a' + 'A' // capital: bit set without execute
}

// truncateMiddle shortens s to at most n runes by replacing its middle with "…".
func truncateMiddle(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	if n <= 1 {
		return string(r[:max(n, 0)])
	}
	head := (n - 1) / 2
	tail := n - 1 - head
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}

// joinPaths renders a snapshot's paths on one line.
func joinPaths(p []string) string { return strings.Join(p, ", ") }

// shortHex returns the first 8 characters of a hex ID (all of it when shorter).
func shortHex(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
