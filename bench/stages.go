package bench

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/erasure"
	"github.com/cofferhq/coffer/client/chunker"
	"github.com/cofferhq/coffer/client/crypt"
)

// Stage is one stage micro-benchmark result.
type Stage struct {
	Name string `json:"name"`
	Side string `json:"side"` // "client", "node" or "transport"
	// MBps1 is the throughput of one goroutine (MB/s per core, 1 MB = 1e6 bytes).
	MBps1 float64 `json:"mbps_1core"`
	// MBpsN is the throughput with Cores goroutines (0 when not measured).
	MBpsN float64 `json:"mbps_ncores,omitempty"`
	Cores int     `json:"cores,omitempty"`
	// Ratio is the compression ratio (input/output) for compressors.
	Ratio float64 `json:"ratio,omitempty"`
	// OpsPerSec counts operations (shards, keys) per second where that is the figure
	// that matters.
	OpsPerSec float64 `json:"ops_per_s,omitempty"`
	// CPUSecPerGiB is the process CPU time per GiB moved (transport stages).
	CPUSecPerGiB float64 `json:"cpu_s_per_gib,omitempty"`
	// Reference is the single-core limit recorded for the library on this machine class
	// (DEPENDENCIES.md), for comparison.
	Reference string `json:"reference,omitempty"`
	Note      string `json:"note,omitempty"`
}

// blockSize is the unit the block stages work on: the chunker's average chunk.
const blockSize = 1 << 20

// runFor calls op (which processes n bytes) repeatedly for at least d and at least
// once, on g goroutines, and returns MB/s over all goroutines.
func runFor(d time.Duration, g int, n int, op func(w, i int)) float64 {
	var mu sync.Mutex
	total := 0
	start := time.Now()
	var wg sync.WaitGroup
	for w := range g {
		wg.Go(func() {
			i := 0
			for ; i == 0 || time.Since(start) < d; i++ {
				op(w, i)
			}
			mu.Lock()
			total += i
			mu.Unlock()
		})
	}
	wg.Wait()
	return float64(total) * float64(n) / time.Since(start).Seconds() / 1e6
}

// blocks cuts corpus into blockSize pieces (at least one).
func blocks(corpus []byte) [][]byte {
	var out [][]byte
	for off := 0; off+blockSize <= len(corpus); off += blockSize {
		out = append(out, corpus[off:off+blockSize:off+blockSize])
	}
	if len(out) == 0 {
		out = append(out, corpus)
	}
	return out
}

// ClientStages measures the client-side data path stages on corpus (a sample of the
// dataset), each for about d on one goroutine and on all cores.
func ClientStages(corpus []byte, d time.Duration) ([]Stage, error) {
	cores := runtime.GOMAXPROCS(0)
	bs := blocks(corpus)
	var out []Stage
	both := func(name, ref string, op func(w, i int)) Stage {
		s := Stage{Name: name, Side: "client", Reference: ref, Cores: cores}
		s.MBps1 = runFor(d, 1, len(bs[0]), op)
		if cores > 1 {
			s.MBpsN = runFor(d, cores, len(bs[0]), op)
		}
		return s
	}

	// FastCDC over the whole corpus.
	var mk crypt.MasterKey
	for i := range mk {
		mk[i] = byte(i)
	}
	keys := crypt.DeriveKeys(mk)
	ch, err := chunker.New(chunker.DefaultParams(), keys.GearSeed())
	if err != nil {
		return nil, fmt.Errorf("bench: chunker: %w", err)
	}
	cbuf := make([][]byte, cores)
	for w := range cbuf {
		cbuf[w] = make([]byte, 2*chunker.DefaultParams().Max)
	}
	nchunks := 0
	chunkOp := func(w, _ int) {
		n := 0
		_ = ch.Split(bytes.NewReader(corpus), cbuf[w], func([]byte) error { n++; return nil })
		if w == 0 {
			nchunks = n
		}
	}
	s := Stage{Name: "chunker FastCDC 256K/1M/4M", Side: "client", Cores: cores}
	s.MBps1 = runFor(d, 1, len(corpus), chunkOp)
	if cores > 1 {
		s.MBpsN = runFor(d, cores, len(corpus), chunkOp)
	}
	s.Note = fmt.Sprintf("%d chunks in %d MiB sample", nchunks, len(corpus)>>20)
	out = append(out, s)

	out = append(out, both("chunk ID HMAC-SHA-256", "1440-1500 (sha256 SHA-NI)", func(_, i int) {
		keys.ChunkID(bs[i%len(bs)])
	}))

	// Compressors: EncodeAll on 1 MiB blocks, one encoder per level shared by goroutines.
	type comp struct {
		name, ref string
		enc       func(dst, src []byte) []byte
	}
	var comps []comp
	for _, lv := range []struct {
		name string
		l    zstd.EncoderLevel
		ref  string
	}{{"fastest", zstd.SpeedFastest, "160-185 (log-like, 3.1x)"}, {"default", zstd.SpeedDefault, "118-120"}, {"better", zstd.SpeedBetterCompression, "79-85"}} {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lv.l), zstd.WithEncoderConcurrency(cores), zstd.WithEncoderCRC(false))
		if err != nil {
			return nil, fmt.Errorf("bench: zstd: %w", err)
		}
		defer enc.Close()
		comps = append(comps, comp{"zstd " + lv.name, lv.ref, func(dst, src []byte) []byte { return enc.EncodeAll(src, dst[:0]) }})
	}
	comps = append(comps,
		comp{"S2 default", "", func(dst, src []byte) []byte { return s2.Encode(dst[:cap(dst)], src) }},
		comp{"S2 better", "", func(dst, src []byte) []byte { return s2.EncodeBetter(dst[:cap(dst)], src) }},
	)
	for _, c := range comps {
		dsts := make([][]byte, cores)
		for w := range dsts {
			dsts[w] = make([]byte, 0, s2.MaxEncodedLen(blockSize)+1024)
		}
		in, outN := 0, 0
		for _, b := range bs {
			in += len(b)
			outN += len(c.enc(dsts[0], b))
		}
		st := both("compress "+c.name, c.ref, func(w, i int) { c.enc(dsts[w], bs[i%len(bs)]) })
		st.Ratio = float64(in) / float64(max(outN, 1))
		out = append(out, st)
	}
	{
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(cores))
		if err != nil {
			return nil, fmt.Errorf("bench: zstd: %w", err)
		}
		zs := make([][]byte, len(bs))
		for i, b := range bs {
			zs[i] = enc.EncodeAll(b, nil)
		}
		enc.Close()
		dsts := make([][]byte, cores)
		for w := range dsts {
			dsts[w] = make([]byte, 0, blockSize)
		}
		out = append(out, both("decompress zstd fastest", "600-800", func(w, i int) {
			_, _ = dec.DecodeAll(zs[i%len(zs)], dsts[w][:0])
		}))
		dec.Close()
	}

	// AES-256-GCM alone, and the real chunk sealing (sample test, zstd, per-chunk key, GCM).
	block, _ := aes.NewCipher(make([]byte, 32))
	aead, _ := cipher.NewGCM(block)
	nonce := make([]byte, aead.NonceSize())
	sealBufs := make([][]byte, cores)
	for w := range sealBufs {
		sealBufs[w] = make([]byte, 0, blockSize+4096)
	}
	out = append(out, both("AES-256-GCM seal", "", func(w, i int) {
		aead.Seal(sealBufs[w][:0], nonce, bs[i%len(bs)], nil)
	}))
	sealed := aead.Seal(nil, nonce, bs[0], nil)
	out = append(out, both("AES-256-GCM open", "", func(w, _ int) {
		_, _ = aead.Open(sealBufs[w][:0], nonce, sealed, nil)
	}))
	ids := make([]chunk.ID, len(bs))
	for i, b := range bs {
		ids[i] = keys.ChunkID(b)
	}
	chunkBufs := make([][]byte, cores)
	for w := range chunkBufs {
		chunkBufs[w] = make([]byte, 0, 2*blockSize)
	}
	out = append(out, both("crypt.Seal (sample, zstd, GCM)", "", func(w, i int) {
		_, _ = keys.Seal(chunkBufs[w][:0], ids[i%len(bs)], bs[i%len(bs)])
	}))

	// Reed-Solomon 4+2 on 1 MiB chunks (data in).
	codec := erasure.NewCodec()
	out = append(out, both("Reed-Solomon 4+2 encode", "9600-11600 cold, 25-30 GB/s hot", func(_, i int) {
		_, _ = codec.Encode(4, 2, bs[i%len(bs)])
	}))
	shards, err := codec.Encode(4, 2, bs[0])
	if err != nil {
		return nil, fmt.Errorf("bench: erasure: %w", err)
	}
	work := make([][][]byte, cores)
	for w := range work {
		work[w] = make([][]byte, len(shards))
	}
	out = append(out, both("Reed-Solomon 4+2 rebuild 2", "~encode", func(w, _ int) {
		sh := work[w]
		copy(sh, shards)
		sh[0], sh[3] = nil, nil
		_ = codec.Reconstruct(4, 2, sh)
	}))
	return out, nil
}
