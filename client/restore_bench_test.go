package client

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRestoreSmallFiles restores 4,000 files of 1-8 KiB in 80 directories: the
// per-file system calls (create, write, mode, times) dominate.
func BenchmarkRestoreSmallFiles(b *testing.B) {
	benchmarkRestore(b, func(dir string) int64 {
		var total int64
		for i := range 4000 {
			data := randBytes(uint64(i), 1024+(i%8)*1024)
			writeFile(b, filepath.Join(dir, fmt.Sprintf("d%02d", i%80), "sub", "f"+strconv.Itoa(i)), data, 0o644)
			total += int64(len(data))
		}
		return total
	})
}

// BenchmarkRestoreLargeFiles restores 8 files of 4 MiB: chunk reads and writes dominate.
func BenchmarkRestoreLargeFiles(b *testing.B) {
	benchmarkRestore(b, func(dir string) int64 {
		var total int64
		for i := range 8 {
			data := randBytes(uint64(500+i), 4<<20)
			writeFile(b, filepath.Join(dir, "big", strconv.Itoa(i)+".bin"), data, 0o644)
			total += int64(len(data))
		}
		return total
	})
}

// benchmarkRestore backs up the tree fill writes once and restores it into a fresh
// directory per iteration.
func benchmarkRestore(b *testing.B, fill func(dir string) int64) {
	ctx := context.Background()
	src := b.TempDir()
	total := fill(src)
	e := newEnv(b)
	a := e.open(b)
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		b.Fatal(err)
	}
	out := b.TempDir()
	b.SetBytes(total)
	var cpu time.Duration
	b.ResetTimer()
	for i := range b.N {
		target := filepath.Join(out, strconv.Itoa(i))
		before := cpuTime(b)
		if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target}); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime(b) - before
		b.StopTimer()
		if err := os.RemoveAll(target); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	// CPU time (user and system) is steadier than wall time on a shared machine.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
