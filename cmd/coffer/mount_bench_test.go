package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// BenchmarkMount measures coffer mount against a cluster over loopback QUIC
// (docs/benchmarks.md): "coffer dump" of a 100 MB random file (the whole command; the
// command's own cost shows in dump-small, a dump of a 17-byte file), cat of
// the same file through the mount, and ls -lR of a 10,000-file snapshot. Every cat and
// ls runs on a fresh mount, so neither the kernel's caches nor the mount's hold anything
// yet.
//
//	go test -run '^$' -bench BenchmarkMount -benchtime 3x ./cmd/coffer
func BenchmarkMount(b *testing.B) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		b.Skipf("no FUSE here (%v)", err)
	}
	c := nodetest.New(b, nodetest.Opts{})
	dir := b.TempDir()
	const bigSize = 100 << 20
	big := filepath.Join(dir, "big")
	data := make([]byte, bigSize)
	r := rand.New(rand.NewPCG(19, 1))
	for i := 0; i+8 <= len(data); i += 8 {
		v := r.Uint64()
		for k := range 8 {
			data[i+k] = byte(v >> (8 * k))
		}
	}
	if err := os.MkdirAll(big, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(big, "file.bin"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	small := filepath.Join(dir, "small")
	for i := range 100 {
		d := filepath.Join(small, fmt.Sprintf("d%02d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		for j := range 100 {
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%02d", j)), []byte(fmt.Sprintf("small file %d/%d\n", i, j)), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	env := map[string]string{
		"COFFER_CONFIG":     node.DevClientConfig(c.Dir),
		"COFFER_PASSPHRASE": "mount bench passphrase",
		"COFFER_CACHE_DIR":  filepath.Join(dir, "cache"),
	}
	runCLI := func(stdout io.Writer, args ...string) {
		b.Helper()
		var stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if code := run(ctx, args, strings.NewReader(""), stdout, &stderr, func(k string) string { return env[k] }); code != exitOK {
			b.Fatalf("coffer %v: exit %d: %s", args, code, stderr.String())
		}
	}
	runCLI(io.Discard, "init")
	var out bytes.Buffer
	runCLI(&out, "--json", "backup", big)
	bigID := lastJSONB(b, out.String())
	out.Reset()
	runCLI(&out, "--json", "backup", small)
	smallID := lastJSONB(b, out.String())

	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		b.Fatal(err)
	}
	// mountFresh mounts the vault and returns the snapshot directories by ID prefix and
	// the function that unmounts it.
	mountFresh := func() (map[string]string, func()) {
		b.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"mount", mnt}, strings.NewReader(""), io.Discard, io.Discard, func(k string) string { return env[k] })
		}()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			ents, err := os.ReadDir(filepath.Join(mnt, "snapshots"))
			if err == nil && len(ents) == 2 {
				dirs := map[string]string{}
				for _, e := range ents {
					dirs[e.Name()[len(e.Name())-8:]] = filepath.Join(mnt, "snapshots", e.Name())
				}
				return dirs, func() {
					cancel()
					if code := <-done; code != exitOK {
						b.Fatalf("coffer mount exited %d", code)
					}
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("mount not serving after 2 minutes: %v", err)
			}
			time.Sleep(20 * time.Millisecond) // polling for the mount to appear
		}
	}
	b.Run("dump-100MB", func(b *testing.B) {
		b.SetBytes(bigSize)
		for range b.N {
			runCLI(io.Discard, "dump", bigID[:8], "/big/file.bin")
		}
	})
	b.Run("dump-small", func(b *testing.B) { // the command's own cost: connect, open the vault
		for range b.N {
			runCLI(io.Discard, "dump", smallID[:8], "/small/d00/f00")
		}
	})
	b.Run("cat-100MB", func(b *testing.B) {
		b.SetBytes(bigSize)
		for range b.N {
			b.StopTimer()
			dirs, unmount := mountFresh()
			b.StartTimer()
			cat := exec.Command("cat", filepath.Join(dirs[bigID[:8]], "big", "file.bin"))
			cat.Stdout = io.Discard
			if err := cat.Run(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			unmount()
			b.StartTimer()
		}
	})
	b.Run("ls-lR-10k", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			dirs, unmount := mountFresh()
			b.StartTimer()
			var lsOut bytes.Buffer
			ls := exec.Command("ls", "-lR", dirs[smallID[:8]])
			ls.Stdout = &lsOut
			if err := ls.Run(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if n := strings.Count(lsOut.String(), "\n-r"); n != 10_000 {
				b.Fatalf("ls -lR listed %d files, want 10,000", n)
			}
			unmount()
			b.StartTimer()
		}
	})
}

// lastJSONB returns the snapshot_id of the last JSON line of out.
func lastJSONB(b *testing.B, out string) string {
	b.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var m struct {
		SnapshotID string `json:"snapshot_id"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil || len(m.SnapshotID) < 8 {
		b.Fatalf("backup summary %q: %v", lines[len(lines)-1], err)
	}
	return m.SnapshotID
}
