package bench

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/cofferhq/coffer/chunkstore/erasure"
	"github.com/cofferhq/coffer/client/chunker"
	"github.com/cofferhq/coffer/client/crypt"
)

// textish returns n bytes of compressible, source-like data.
func textish(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := []string{"func", "return", "err", "if", "nil", "for", "range", "package", "import", "type", "struct", "{", "}", "\n", "\t", "x", "y", ":=", "fmt.Errorf"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(' ')
	}
	return b.Bytes()[:n]
}

func TestReportRatiosAndMarkdown(t *testing.T) {
	r := &Report{
		Datasets: []Dataset{{Name: "go1", Files: 10, Bytes: 100 << 20, SmallFiles: 8, SmallBytes: 10 << 20}},
		Stages: []Stage{
			{Name: "chunker FastCDC", MBps1: 1000, MBpsN: 1800},
			{Name: "crypt.Seal (sample, zstd, GCM)", MBps1: 100, MBpsN: 190},
			{Name: "compress zstd better", MBps1: 10}, // not on the backup path
		},
		Scenarios: []Scenario{
			{Tool: "coffer", Name: ScInitial, MBps: 150, Added: 40 << 20, StoredD: 70 << 20, Chunks: 20, ChunksPS: 10},
			{Tool: "restic", Name: ScInitial, MBps: 50},
			{Tool: "coffer", Name: ScUnchanged, MBps: 100},
			{Tool: "restic", Name: ScUnchanged, MBps: 50},
			{Tool: "coffer", Name: ScIncremental, MBps: 10, Added: 5},
			{Tool: "restic", Name: ScIncremental, MBps: 10, StoredD: 4},
		},
	}
	r.summarise()
	want := map[string]bool{ScInitial: true, ScUnchanged: false}
	got := map[string]bool{}
	for _, ra := range r.Ratios {
		if ra.Peer == "restic" && ra.Met != nil {
			got[ra.Scenario+"/"+ra.Metric] = *ra.Met
		}
	}
	if got[ScInitial+"/throughput"] != want[ScInitial] || got[ScUnchanged+"/throughput"] != want[ScUnchanged] {
		t.Fatalf("targets: got %v", got)
	}
	if met, ok := got[ScIncremental+"/bytes added (one copy)"]; !ok || met {
		t.Fatalf("incremental bytes target: got %v (5 added against restic's 4 must miss)", got)
	}
	if r.Pipeline == nil || r.Pipeline.SlowestStage != "crypt.Seal (sample, zstd, GCM)" {
		t.Fatalf("pipeline: %+v", r.Pipeline)
	}
	if e := r.Pipeline.Efficiency; e < 0.78 || e > 0.8 {
		t.Fatalf("efficiency %v, want 150/190", e)
	}
	var md bytes.Buffer
	r.Markdown(&md)
	for _, s := range []string{"| initial backup | restic | throughput | 3.00x | ≥ 2x | yes |", "| unchanged re-backup | restic | throughput | 2.00x | ≥ 3x | **no** |", "## Stages"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("markdown lacks %q:\n%s", s, md.String())
		}
	}
}

func TestUnzipStripAndPlace(t *testing.T) {
	dir := t.TempDir()
	zp := filepath.Join(dir, "go9.zip")
	f, _ := os.Create(zp)
	zw := zip.NewWriter(f)
	for name, body := range map[string]string{
		"golang.org/toolchain@v0.0.1-go9.linux-amd64/bin/go":         "binary",
		"golang.org/toolchain@v0.0.1-go9.linux-amd64/src/a/a.go":     "package a",
		"golang.org/toolchain@v0.0.1-go9.linux-amd64/pkg/tool/x/vet": "vet",
	} {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	zw.Close()
	f.Close()
	ds := filepath.Join(dir, "go9")
	if err := unzipStrip(zp, ds); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(ds, "go", "bin", "go"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("bin/go: %v %v", st, err)
	}
	if b, err := os.ReadFile(filepath.Join(ds, "go", "src", "a", "a.go")); err != nil || string(b) != "package a" {
		t.Fatalf("src/a/a.go: %q %v", b, err)
	}
	d, err := scanDataset("go9", filepath.Join(ds, "go"))
	if err != nil || d.Files != 3 || d.Bytes != int64(len("binary")+len("package a")+len("vet")) {
		t.Fatalf("scan: %+v %v", d, err)
	}
	// placeCur moves the tree to the common source path; recoverCur puts it back.
	src := filepath.Join(dir, "work", "go")
	if err := placeCur(dir, d, src); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, "bin", "go")); err != nil {
		t.Fatal(err)
	}
	if err := recoverCur(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ds, "go", "bin", "go")); err != nil {
		t.Fatalf("not put back: %v", err)
	}
}

func TestClientStagesSmoke(t *testing.T) {
	if !raceEnabled {
		st, err := ClientStages(textish(1<<20), time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(st) != 13 {
			t.Errorf("got %d client stages, want 13", len(st))
		}
		for _, s := range st {
			if s.MBps1 <= 0 {
				t.Errorf("%s: %v MB/s", s.Name, s.MBps1)
			}
		}
	}
	ts, err := TransportStages(context.Background(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].MBps1 <= 0 || ts[1].MBps1 <= 0 {
		t.Fatalf("transport: %+v", ts)
	}
}

// Stage micro-benchmarks (benchstat-readable; `make bench`).

func BenchmarkChunker(b *testing.B) {
	data := textish(16 << 20)
	var mk crypt.MasterKey
	c, _ := chunker.New(chunker.DefaultParams(), crypt.DeriveKeys(mk).GearSeed())
	buf := make([]byte, 2*chunker.DefaultParams().Max)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		_ = c.Split(bytes.NewReader(data), buf, func([]byte) error { return nil })
	}
}

func BenchmarkChunkID(b *testing.B) {
	data := textish(1 << 20)
	var mk crypt.MasterKey
	k := crypt.DeriveKeys(mk)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		k.ChunkID(data)
	}
}

func BenchmarkCompress(b *testing.B) {
	data := textish(1 << 20)
	dst := make([]byte, 0, s2.MaxEncodedLen(len(data)))
	for _, lv := range []struct {
		name string
		l    zstd.EncoderLevel
	}{{"zstd-fastest", zstd.SpeedFastest}, {"zstd-default", zstd.SpeedDefault}, {"zstd-better", zstd.SpeedBetterCompression}} {
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(lv.l), zstd.WithEncoderConcurrency(1))
		b.Run(lv.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				enc.EncodeAll(data, dst[:0])
			}
		})
		enc.Close()
	}
	b.Run("s2", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			s2.Encode(dst[:cap(dst)], data)
		}
	})
	b.Run("s2-better", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			s2.EncodeBetter(dst[:cap(dst)], data)
		}
	})
}

func BenchmarkAESGCM(b *testing.B) {
	data := textish(1 << 20)
	block, _ := aes.NewCipher(make([]byte, 32))
	aead, _ := cipher.NewGCM(block)
	nonce := make([]byte, aead.NonceSize())
	dst := make([]byte, 0, len(data)+64)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		aead.Seal(dst[:0], nonce, data, nil)
	}
}

func BenchmarkSeal(b *testing.B) {
	data := textish(1 << 20)
	var mk crypt.MasterKey
	k := crypt.DeriveKeys(mk)
	id := k.ChunkID(data)
	dst := make([]byte, 0, 2<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := k.Seal(dst[:0], id, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReedSolomon(b *testing.B) {
	data := textish(1 << 20)
	c := erasure.NewCodec()
	b.Run("encode-4+2", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := c.Encode(4, 2, data); err != nil {
				b.Fatal(err)
			}
		}
	})
	shards, _ := c.Encode(4, 2, data)
	b.Run("rebuild2-4+2", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		sh := make([][]byte, len(shards))
		for b.Loop() {
			copy(sh, shards)
			sh[0], sh[3] = nil, nil
			if err := c.Reconstruct(4, 2, sh); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkTransport(b *testing.B) {
	srv, cli, err := loopbackTLS()
	if err != nil {
		b.Fatal(err)
	}
	const per = 64 << 20
	b.Run("quic", func(b *testing.B) {
		b.SetBytes(per)
		for b.Loop() {
			if _, err := quicOneWay(context.Background(), srv, cli, per); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tcp-tls13", func(b *testing.B) {
		b.SetBytes(per)
		for b.Loop() {
			if _, err := tcpOneWay(srv, cli, per); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestStudySmallFiles(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for i, root := range []string{a, b} {
		for j := range 20 {
			body := textish(3000 + 100*j)
			if i == 1 && j == 7 {
				body = append(body, "changed"...)
			}
			if err := os.WriteFile(filepath.Join(root, "f"+string(rune('a'+j))), body, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := StudySmallFiles(a, b)
	if err != nil {
		t.Fatal(err)
	}
	per, bun := st[0], st[1]
	if per.Chunks != 20 || per.NewChunks != 1 || per.NewBytes != int64(3000+700+len("changed")) {
		t.Errorf("per file: %+v", per)
	}
	// All 20 files (67 KiB) fit in one bundle chunk, which the change replaces.
	if bun.Chunks != 1 || bun.NewChunks != 1 || bun.NewBytes != per.Bytes+int64(len("changed")) {
		t.Errorf("bundled: %+v (per file %+v)", bun, per)
	}
	// The agent's layout bundles the files below its limit with smaller chunks: fewer
	// chunks than per file, the same bytes, and a change rewrites less than one bundle.
	if len(st) != 3 {
		t.Fatalf("%d layouts, want 3", len(st))
	}
	ag := st[2]
	if ag.Chunks >= per.Chunks || ag.Bytes != per.Bytes || ag.NewChunks == 0 || ag.NewBytes >= bun.NewBytes {
		t.Errorf("agent's layout: %+v (per file %+v, one bundle %+v)", ag, per, bun)
	}
}

func TestFindPeerMissingSaysHowToInstall(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := findPeer("borg")
	if err == nil || !strings.Contains(err.Error(), "apt-get install -y borgbackup") {
		t.Fatalf("findPeer(borg) with an empty PATH: %v", err)
	}
}
