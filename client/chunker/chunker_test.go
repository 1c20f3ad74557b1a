package chunker

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/iotest"
)

var smallParams = Params{Min: 2 << 10, Avg: 8 << 10, Max: 32 << 10}

func seedOf(b byte) [32]byte { return [32]byte{b, 0xc0, 0xff, 0xee} }

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 3}).Read(b)
	return b
}

func mustNew(t testing.TB, p Params, seed [32]byte) *Chunker {
	t.Helper()
	c, err := New(p, seed)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refGear derives the gear table exactly as FORMAT.md states it, independently of
// gearTable.
func refGear(seed [32]byte) [256]uint64 {
	var g [256]uint64
	for j := range 64 {
		m := hmac.New(sha256.New, seed[:])
		m.Write([]byte("coffer fastcdc-v1 gear"))
		m.Write([]byte{byte(j >> 24), byte(j >> 16), byte(j >> 8), byte(j)})
		s := m.Sum(nil)
		for k := range 4 {
			g[4*j+k] = binary.LittleEndian.Uint64(s[8*k:])
		}
	}
	return g
}

// refCut is the naive FastCDC-NC2 reference of FORMAT.md: hash every byte from the chunk
// start, test each length from Min with the mask for that length (and, in fastcdc-v2,
// against the hash of 64 zero bytes), force a cut at Max.
func refCut(p Params, gear *[256]uint64, buf []byte, eof bool) int {
	var zeroWindow uint64
	for range Window {
		zeroWindow = zeroWindow<<1 + gear[0]
	}
	bitsAvg := 0
	for 1<<bitsAvg < p.Avg {
		bitsAvg++
	}
	maskS := ^uint64(0) << (64 - (bitsAvg + 2))
	maskL := ^uint64(0) << (64 - (bitsAvg - 2))
	var h uint64
	for i, b := range buf {
		h = h<<1 + gear[b]
		l := i + 1
		if l == p.Max {
			return l
		}
		if l < p.Min {
			continue
		}
		mask := maskL
		if l < p.Avg {
			mask = maskS
		}
		if h&mask == 0 || (p.ZeroRuns && h == zeroWindow) {
			if l == p.Min && !eof && len(buf) == p.Min {
				return 0 // Cut asks for more data when it has no more than Min bytes
			}
			return l
		}
	}
	if eof {
		return len(buf)
	}
	return 0
}

// cuts splits data with repeated Cut calls at eof and returns the chunk lengths.
func cuts(c *Chunker, data []byte) []int {
	var out []int
	for len(data) > 0 {
		n := c.Cut(data, true)
		out = append(out, n)
		data = data[n:]
	}
	return out
}

// chunkSums returns the SHA-256 of every chunk c cuts data into.
func chunkSums(c *Chunker, data []byte) map[[32]byte]bool {
	sums := map[[32]byte]bool{}
	off := 0
	for _, n := range cuts(c, data) {
		sums[sha256.Sum256(data[off:off+n])] = true
		off += n
	}
	return sums
}

func refCuts(p Params, gear *[256]uint64, data []byte) []int {
	var out []int
	for len(data) > 0 {
		n := refCut(p, gear, data, true)
		out = append(out, n)
		data = data[n:]
	}
	return out
}

func TestGearTableMatchesSpec(t *testing.T) {
	for _, s := range []byte{0, 1, 200} {
		if got, want := gearTable(seedOf(s)), refGear(seedOf(s)); got != want {
			t.Fatalf("seed %d: gear table differs from the FORMAT.md derivation", s)
		}
	}
}

func TestCutMatchesReference(t *testing.T) {
	// Random data plus a stretch of zeros (which never or always match, exercising the
	// forced Max cut or the Min cut) and a short tail.
	data := randomBytes(1, 3<<20)
	data = append(data, make([]byte, 300<<10)...)
	data = append(data, randomBytes(2, 12345)...)
	// Zero runs of every length around the 64-byte window, at offsets past Min.
	for i, n := range []int{63, 64, 65, 200, 4096} {
		data = append(data, randomBytes(uint64(30+i), 3000+i*777)...)
		data = append(data, make([]byte, n)...)
	}
	data = append(data, randomBytes(40, 5000)...)
	zr := smallParams
	zr.ZeroRuns = true
	for _, p := range []Params{smallParams, zr, {Min: 64, Avg: 256, Max: 1024}, {Min: 64, Avg: 256, Max: 1024, ZeroRuns: true},
		{Min: 100, Avg: 4096, Max: 5000}, DefaultParams(), V1Params()} {
		t.Run(p.Name(), func(t *testing.T) {
			for _, s := range []byte{1, 2} {
				c := mustNew(t, p, seedOf(s))
				gear := refGear(seedOf(s))
				got, want := cuts(c, data), refCuts(p, &gear, data)
				if !slices.Equal(got, want) {
					t.Fatalf("seed %d: optimised cuts differ from the reference (%d vs %d chunks; first %v vs %v)", s, len(got), len(want), got[:min(5, len(got))], want[:min(5, len(want))])
				}
				if s != 1 {
					continue
				}
				if again := cuts(mustNew(t, p, seedOf(s)), data); !slices.Equal(got, again) {
					t.Fatalf("seed %d: two runs cut differently", s)
				}
			}
		})
	}
}

func TestCutRespectsMinMax(t *testing.T) {
	data := append(randomBytes(3, 4<<20), make([]byte, 200<<10)...)
	data = append(data, bytes.Repeat([]byte{0xab, 0xcd}, 100<<10)...)
	data = append(data, randomBytes(4, 1<<20)...)
	for _, p := range []Params{smallParams, {Min: 64, Avg: 256, Max: 300}} {
		c := mustNew(t, p, seedOf(3))
		cs := cuts(c, data)
		total, forced := 0, 0
		for i, n := range cs {
			total += n
			if n > p.Max || (n < p.Min && i != len(cs)-1) {
				t.Fatalf("%s: chunk %d has %d bytes", p.Name(), i, n)
			}
			if n == p.Max {
				forced++
			}
		}
		if total != len(data) {
			t.Fatalf("%s: chunks cover %d bytes of %d", p.Name(), total, len(data))
		}
		if forced == 0 {
			t.Fatalf("%s: no chunk hit Max; the data was meant to force some", p.Name())
		}
	}
}

func TestCutContract(t *testing.T) {
	p := smallParams
	c := mustNew(t, p, seedOf(4))
	data := randomBytes(5, 4*p.Max)
	if got := c.Cut(nil, true); got != 0 {
		t.Fatalf("Cut(empty, eof) = %d", got)
	}
	if got := c.Cut(nil, false); got != 0 {
		t.Fatalf("Cut(empty) = %d", got)
	}
	for _, n := range []int{1, p.Min - 1, p.Min} {
		if got := c.Cut(data[:n], true); got != n {
			t.Fatalf("Cut(%d bytes, eof) = %d, want %d", n, got, n)
		}
		if got := c.Cut(data[:n], false); got != 0 {
			t.Fatalf("Cut(%d bytes) = %d, want 0", n, got)
		}
	}
	full := c.Cut(data, false)
	if full < p.Min || full > p.Max {
		t.Fatalf("Cut(%d bytes) = %d, outside [%d, %d]", len(data), full, p.Min, p.Max)
	}
	// Fewer bytes never give a different non-zero answer.
	for n := p.Min + 1; n <= p.Max; n += 97 {
		got := c.Cut(data[:n], false)
		if got != 0 && got != full {
			t.Fatalf("Cut(%d bytes) = %d, but with more data %d", n, got, full)
		}
		if got == 0 && n >= full {
			t.Fatalf("Cut(%d bytes) = 0 although the boundary at %d is inside", n, full)
		}
		if eofGot := c.Cut(data[:n], true); eofGot != min(n, full) {
			t.Fatalf("Cut(%d bytes, eof) = %d, want %d", n, eofGot, min(n, full))
		}
	}
}

func TestAverageChunkSize(t *testing.T) {
	size := 64 << 20
	if testing.Short() {
		size = 16 << 20
	}
	p := DefaultParams()
	data := randomBytes(6, size)
	for _, s := range []byte{5} {
		cs := cuts(mustNew(t, p, seedOf(s)), data)
		avg := float64(len(data)) / float64(len(cs))
		t.Logf("seed %d: %d chunks, average %.0f bytes (%.2f × Avg)", s, len(cs), avg, avg/float64(p.Avg))
		if avg < 0.75*float64(p.Avg) || avg > 1.25*float64(p.Avg) {
			t.Fatalf("seed %d: average chunk %.0f bytes, want within ±25%% of %d", s, avg, p.Avg)
		}
	}
}

func TestShiftResistance(t *testing.T) {
	data := randomBytes(7, 16<<20)
	ins := randomBytes(8, 100)
	shifted := slices.Concat(data[:1000], ins, data[1000:])
	for _, p := range []Params{DefaultParams(), {Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}} {
		c := mustNew(t, p, seedOf(7))
		orig := chunkSums(c, data)
		cs := cuts(c, shifted)
		shared := 0
		off := 0
		for _, n := range cs {
			if orig[sha256.Sum256(shifted[off:off+n])] {
				shared++
			}
			off += n
		}
		frac := float64(shared) / float64(len(cs))
		t.Logf("%s: %d of %d chunks shared after a 100-byte insertion", p.Name(), shared, len(cs))
		if frac < 0.9 || shared == len(cs) {
			t.Fatalf("%s: %d of %d chunks shared, want ≥ 90%% (and the changed one not)", p.Name(), shared, len(cs))
		}
	}
}

func TestSeedsGiveDifferentBoundaries(t *testing.T) {
	data := randomBytes(9, 2<<20)
	a := cuts(mustNew(t, smallParams, seedOf(1)), data)
	b := cuts(mustNew(t, smallParams, seedOf(2)), data)
	offsets := func(cs []int) map[int]bool {
		m, off := map[int]bool{}, 0
		for _, n := range cs[:len(cs)-1] {
			off += n
			m[off] = true
		}
		return m
	}
	oa, ob := offsets(a), offsets(b)
	common := 0
	for o := range oa {
		if ob[o] {
			common++
		}
	}
	// Independent gear tables share a boundary only by chance (≈ Avg/Max per boundary).
	if common > len(oa)/10 {
		t.Fatalf("seeds 1 and 2 share %d of %d boundaries", common, len(oa))
	}
	if gearTable(seedOf(1)) == gearTable(seedOf(2)) {
		t.Fatalf("different seeds gave the same gear table")
	}
}

// chunkyReader returns reads of pseudo-random sizes (1..n bytes).
type chunkyReader struct {
	r   io.Reader
	rnd *rand.Rand
	n   int
}

func (c *chunkyReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1+c.rnd.IntN(min(len(p), c.n))]
	}
	return c.r.Read(p)
}

func TestSplitEqualsCut(t *testing.T) {
	p := smallParams
	c := mustNew(t, p, seedOf(10))
	for _, size := range []int{0, 1, p.Min, p.Max, 2*p.Max + 1, 1 << 20} {
		data := randomBytes(uint64(size), size)
		want := cuts(c, data)
		for name, r := range map[string]io.Reader{
			"whole":  bytes.NewReader(data),
			"half":   iotest.HalfReader(bytes.NewReader(data)),
			"chunky": &chunkyReader{bytes.NewReader(data), rand.New(rand.NewPCG(1, 2)), 5000},
			"ateof":  iotest.DataErrReader(bytes.NewReader(data)),
		} {
			var got []int
			var joined []byte
			buf := make([]byte, 2*p.Max+17)
			err := c.Split(r, buf, func(ch []byte) error {
				got = append(got, len(ch))
				joined = append(joined, ch...)
				return nil
			})
			if err != nil {
				t.Fatalf("%d bytes, %s reader: %v", size, name, err)
			}
			if !slices.Equal(got, want) || !bytes.Equal(joined, data) {
				t.Fatalf("%d bytes, %s reader: Split gave %d chunks, repeated Cut %d", size, name, len(got), len(want))
			}
		}
	}
}

func TestSplitErrors(t *testing.T) {
	p := smallParams
	c := mustNew(t, p, seedOf(11))
	called := false
	err := c.Split(bytes.NewReader([]byte("x")), make([]byte, 2*p.Max-1), func([]byte) error { called = true; return nil })
	if !errors.Is(err, ErrInvalid) || called {
		t.Fatalf("short buffer: err = %v, called = %v", err, called)
	}
	stop := errors.New("stop")
	n := 0
	err = c.Split(bytes.NewReader(randomBytes(1, 1<<20)), make([]byte, 2*p.Max), func([]byte) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if err != stop || n != 3 {
		t.Fatalf("fn error: err = %v after %d calls, want the fn's error after 3", err, n)
	}
	boom := errors.New("disk on fire")
	err = c.Split(io.MultiReader(bytes.NewReader(randomBytes(2, 100<<10)), iotest.ErrReader(boom)), make([]byte, 2*p.Max), func([]byte) error { return nil })
	if !errors.Is(err, boom) {
		t.Fatalf("read error: err = %v, want it wrapped", err)
	}
}

func TestSplitAllocatesNothing(t *testing.T) {
	c := mustNew(t, smallParams, seedOf(12))
	data := randomBytes(13, 256<<10)
	buf := make([]byte, 2*smallParams.Max)
	r := bytes.NewReader(data)
	fn := func([]byte) error { return nil }
	allocs := testing.AllocsPerRun(5, func() {
		r.Reset(data)
		if err := c.Split(r, buf, fn); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Split allocated %.0f times per run", allocs)
	}
}

func TestParams(t *testing.T) {
	if got, want := DefaultParams().Name(), "fastcdc-v2-262144-1048576-4194304"; got != want {
		t.Fatalf("DefaultParams().Name() = %q, want %q", got, want)
	}
	if got, want := V1Params().Name(), "fastcdc-v1-262144-1048576-4194304"; got != want {
		t.Fatalf("V1Params().Name() = %q, want %q", got, want)
	}
	valid := []Params{DefaultParams(), V1Params(), smallParams, {Min: 64, Avg: 256, Max: 257}, {Min: 1 << 20, Avg: 4 << 20, Max: 8 << 20},
		{Min: 64, Avg: 256, Max: 257, ZeroRuns: true}}
	for _, p := range valid {
		if err := p.Validate(); err != nil {
			t.Fatalf("%+v: %v", p, err)
		}
		got, err := ParseName(p.Name())
		if err != nil || got != p {
			t.Fatalf("ParseName(%q) = %+v, %v", p.Name(), got, err)
		}
		if _, err := New(p, seedOf(0)); err != nil {
			t.Fatalf("New(%+v): %v", p, err)
		}
	}
	invalid := []Params{
		{},
		{Min: 63, Avg: 256, Max: 1024},
		{Min: 64, Avg: 128, Max: 1024},
		{Min: 64, Avg: 1000, Max: 4096},
		{Min: 256, Avg: 256, Max: 1024},
		{Min: 64, Avg: 256, Max: 256},
		{Min: 1 << 20, Avg: 4 << 20, Max: 8<<20 + 1},
		{Min: 300, Avg: 256, Max: 1024},
		{Min: 63, Avg: 256, Max: 1024, ZeroRuns: true},
	}
	for _, p := range invalid {
		if err := p.Validate(); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%+v: Validate = %v, want ErrInvalid", p, err)
		}
		if _, err := New(p, seedOf(0)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%+v: New = %v, want ErrInvalid", p, err)
		}
		if _, err := ParseName(p.Name()); !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParseName(%q) = %v, want ErrInvalid", p.Name(), err)
		}
	}
	for _, s := range []string{"", "fastcdc-v1", "fastcdc-v3-262144-1048576-4194304", "fastcdc-v2", "fastcdc-v2-262144-1048576", "fastcdc-v1-262144-1048576",
		"fastcdc-v2-0262144-1048576-4194304", "fastcdc-v2-v1-262144-1048576-4194304", "fastcdc-v1-fastcdc-v2-262144-1048576-4194304",
		"fastcdc-v1-262144-1048576-4194304-1", "fastcdc-v1-0262144-1048576-4194304", "fastcdc-v1-+262144-1048576-4194304",
		"fastcdc-v1-262144-1048576-4194304 ", "FASTCDC-v1-262144-1048576-4194304", "fastcdc-v1-262144--1048576-4194304",
		"fastcdc-v1-262144-0x100000-4194304", "fastcdc-v1-99999999999999999999-1048576-4194304"} {
		if _, err := ParseName(s); !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParseName(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	c := mustNew(t, smallParams, seedOf(14))
	data := randomBytes(15, 1<<20)
	want := cuts(c, data)
	errs := make(chan []int, 4)
	for range 4 {
		go func() { errs <- cuts(c, data) }()
	}
	for range 4 {
		if got := <-errs; !slices.Equal(got, want) {
			t.Fatalf("concurrent Cut gave different chunks")
		}
	}
}

// FuzzCut: Cut never panics, honours its contract and agrees with the reference.
func FuzzCut(f *testing.F) {
	params := []Params{{Min: 64, Avg: 256, Max: 1024}, {Min: 100, Avg: 512, Max: 600}, {Min: 64, Avg: 256, Max: 257},
		{Min: 64, Avg: 256, Max: 1024, ZeroRuns: true}, {Min: 100, Avg: 512, Max: 600, ZeroRuns: true}}
	var chunkers []*Chunker
	var gears [][256]uint64
	for i, p := range params {
		chunkers = append(chunkers, mustNew(f, p, seedOf(byte(i))))
		gears = append(gears, refGear(seedOf(byte(i))))
	}
	f.Add(uint8(0), false, randomBytes(1, 2000))
	f.Add(uint8(1), true, randomBytes(2, 300))
	f.Add(uint8(2), false, make([]byte, 1024))
	f.Add(uint8(0), true, []byte{})
	f.Add(uint8(3), false, append(randomBytes(3, 150), make([]byte, 100)...))
	f.Add(uint8(4), true, append(append(randomBytes(4, 90), make([]byte, 64)...), randomBytes(5, 500)...))
	f.Fuzz(func(t *testing.T, which uint8, eof bool, data []byte) {
		i := int(which) % len(params)
		p, c := params[i], chunkers[i]
		n := c.Cut(data, eof)
		switch {
		case n < 0 || n > p.Max || n > len(data):
			t.Fatalf("Cut = %d for %d bytes (max %d)", n, len(data), p.Max)
		case n == 0 && len(data) > 0 && (eof || len(data) >= p.Max):
			t.Fatalf("Cut = 0 for %d bytes (eof %v, max %d)", len(data), eof, p.Max)
		case n > 0 && n < p.Min && !(eof && n == len(data)):
			t.Fatalf("Cut = %d below min %d", n, p.Min)
		}
		if want := refCut(p, &gears[i], data, eof); n != want {
			t.Fatalf("Cut = %d, reference %d (%d bytes, eof %v)", n, want, len(data), eof)
		}
	})
}

func BenchmarkCut(b *testing.B) {
	for _, p := range []Params{DefaultParams(), V1Params(), {Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}} {
		b.Run(p.Name(), func(b *testing.B) {
			c := mustNew(b, p, seedOf(20))
			data := randomBytes(21, 32<<20)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				d := data
				for len(d) > 0 {
					d = d[c.Cut(d, true):]
				}
			}
		})
	}
}

// TestZeroRunsCutAtPadding: fastcdc-v2 ends a chunk at most 64 bytes into the first zero
// run past Min; fastcdc-v1 cuts the same data where its hash says, ignoring the run.
// (The rule is the hash of an all-zero window; the oldest bytes of a window reach only
// its low bits, so it can match a few bytes before the 64th zero: FORMAT.md.)
func TestZeroRunsCutAtPadding(t *testing.T) {
	p := smallParams
	p.ZeroRuns = true
	data := slices.Concat(randomBytes(50, p.Min+1000), make([]byte, 100), randomBytes(51, 2*p.Max))
	early := slices.Concat(randomBytes(52, p.Min-200), make([]byte, 100), randomBytes(53, 2*p.Max))
	compared := 0
	for s := range byte(5) {
		c2, c1 := mustNew(t, p, seedOf(s)), mustNew(t, smallParams, seedOf(s))
		run := p.Min + 1000
		if n := c1.Cut(data, false); n <= run+Window {
			continue // v1 itself cuts before or in the run with this seed; nothing to compare
		}
		if got := c2.Cut(data, false); got <= run+Window-8 || got > run+Window {
			t.Fatalf("seed %d: fastcdc-v2 cut at %d, want in (%d, %d] (near 64 bytes into the zero run)", s, got, run+Window-8, run+Window)
		}
		// A run that ends before Min is not a boundary.
		if got := c2.Cut(early, false); got != c1.Cut(early, false) {
			t.Fatalf("seed %d: fastcdc-v2 cut at %d for a zero run below Min; v1 cuts at %d", s, got, c1.Cut(early, false))
		}
		compared++
	}
	if compared == 0 {
		t.Fatal("fastcdc-v1 cut before the run for every seed: nothing compared")
	}
}

// TestZeroRunsLocaliseImageChanges is the case fastcdc-v2 exists for: a disk image whose
// files are padded with zeros to 4 KiB blocks, one file in ten rewritten in place. Its
// chunks end at file padding, so fewer bytes are new than with fastcdc-v1.
func TestZeroRunsLocaliseImageChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(60, 61))
	type file struct{ off, n int }
	var img []byte
	var files []file
	for len(img) < 48<<20 {
		n := 1000 + rng.IntN(200<<10)
		files = append(files, file{len(img), n})
		img = append(img, randomBytes(rng.Uint64(), n)...)
		img = append(img, make([]byte, (4096-n%4096)%4096)...)
	}
	changed := slices.Clone(img)
	for i := 0; i < len(files); i += 10 {
		f := files[i]
		copy(changed[f.off:f.off+f.n], randomBytes(rng.Uint64(), f.n))
	}
	newBytes := func(p Params) (int, int) {
		c := mustNew(t, p, seedOf(9))
		seen := chunkSums(c, img)
		added, off := 0, 0
		for _, n := range cuts(c, changed) {
			if !seen[sha256.Sum256(changed[off:off+n])] {
				added += n
			}
			off += n
		}
		return added, len(seen)
	}
	v1, n1 := newBytes(V1Params())
	v2, n2 := newBytes(DefaultParams())
	changedBytes := 0
	for i := 0; i < len(files); i += 10 {
		changedBytes += files[i].n
	}
	t.Logf("%d of %d bytes rewritten; new chunk bytes: fastcdc-v1 %d (%d chunks in the image), fastcdc-v2 %d (%d chunks)",
		changedBytes, len(img), v1, n1, v2, n2)
	if v2 >= v1*3/4 {
		t.Fatalf("fastcdc-v2 adds %d bytes, not clearly below fastcdc-v1's %d", v2, v1)
	}
	if v2 < changedBytes {
		t.Fatalf("fastcdc-v2 adds %d bytes, fewer than the %d rewritten", v2, changedBytes)
	}
}

// FuzzParseName: a vault's chunker name comes from the meta servers (written by whoever
// created the vault); ParseName never panics, accepts only names Name gives back exactly,
// and what it accepts is valid.
func FuzzParseName(f *testing.F) {
	for _, p := range []Params{DefaultParams(), V1Params(), smallParams} {
		f.Add(p.Name())
	}
	f.Add("fastcdc-v3-262144-1048576-4194304")
	f.Add("fastcdc-v2-0262144-1048576-4194304")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseName(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseName(%q): %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if p.Name() != s {
			t.Fatalf("ParseName(%q) = %+v, whose name is %q", s, p, p.Name())
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("ParseName(%q) accepted invalid %+v: %v", s, p, err)
		}
	})
}
