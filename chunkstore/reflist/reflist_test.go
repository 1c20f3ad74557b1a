package reflist

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

func randIDs(r *rand.Rand, n int) []chunk.ID {
	ids := make([]chunk.ID, n)
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(r.UintN(256))
		}
	}
	return ids
}

func TestRefListRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ids := randIDs(r, 1000)
	in := append(slices.Clone(ids), ids[:100]...) // duplicates
	chunks := Encode(in)
	for _, c := range chunks {
		if got := chunk.ID(sha256.Sum256(c.Data)); got != c.ID {
			t.Fatalf("chunk ID %s is not the SHA-256 of its data (%s)", c.ID.Str(), got.Str())
		}
	}
	got := decodeAll(t, chunks)
	want := slices.Clone(ids)
	slices.SortFunc(want, func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(got, want) {
		t.Fatalf("decoded %d IDs, want the %d sorted distinct inputs", len(got), len(want))
	}
	if Encode(nil) != nil {
		t.Fatal("empty input gave chunks")
	}
}

// decodeAll decodes every chunk of a list, failing on an invalid chunk or one above
// MaxIDs, and returns the concatenation.
func decodeAll(t *testing.T, chunks []Chunk) []chunk.ID {
	t.Helper()
	var all []chunk.ID
	for i, c := range chunks {
		got, err := Decode(c.Data)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if len(got) == 0 || len(got) > MaxIDs {
			t.Fatalf("chunk %d holds %d IDs", i, len(got))
		}
		all = append(all, got...)
	}
	return all
}

// TestRefListSplit: the chunks hold the sorted IDs in order, each ends at a boundary ID
// (or the end), and there are about len/AvgIDs of them.
func TestRefListSplit(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	ids := randIDs(r, 2*MaxIDs+5)
	chunks := Encode(ids)
	all := decodeAll(t, chunks)
	if len(all) != len(ids) || !slices.IsSortedFunc(all, func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) }) {
		t.Fatalf("concatenation has %d IDs (want %d) or is unsorted", len(all), len(ids))
	}
	for i, c := range chunks[:len(chunks)-1] {
		got, _ := Decode(c.Data)
		if !boundary(got[len(got)-1]) {
			t.Fatalf("chunk %d of %d ends at %s, not a boundary", i, len(chunks), got[len(got)-1].Str())
		}
	}
	if want := len(ids) / AvgIDs; len(chunks) < want/2 || len(chunks) > want*2 {
		t.Fatalf("%d chunks for %d IDs, want about %d", len(chunks), len(ids), want)
	}
}

// TestRefListSplitCapped: IDs with no boundary among them are cut every MaxIDs.
func TestRefListSplitCapped(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	ids := randIDs(r, 2*MaxIDs+5)
	for i := range ids {
		ids[i][chunk.Size-1] |= 1 // odd: never 0 modulo AvgIDs
	}
	chunks := Encode(ids)
	if all := decodeAll(t, chunks); len(all) != len(ids) || len(chunks) != 3 {
		t.Fatalf("%d chunks holding %d IDs, want 3 holding %d", len(chunks), len(all), len(ids))
	}
}

// TestRefListSplitIsContentDefined: the reference list of a snapshot that adds or drops
// a few IDs shares every chunk with its parent's but the ones the changes fall in, so
// a backup uploads only those. (With a cut every MaxIDs IDs, one added ID changed every
// later chunk.)
func TestRefListSplitIsContentDefined(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	parent := randIDs(r, 200_000)
	old := map[chunk.ID]bool{}
	for _, c := range Encode(parent) {
		old[c.ID] = true
	}
	for _, tc := range []struct {
		name       string
		ids        []chunk.ID
		changes    int
		maxChanged int
	}{
		{"one added", append(slices.Clone(parent), randIDs(r, 1)...), 1, 2},
		{"one dropped", slices.Delete(slices.Clone(parent), 1000, 1001), 1, 1},
		{"ten added", append(slices.Clone(parent), randIDs(r, 10)...), 10, 20},
	} {
		changed, bytes := 0, 0
		for _, c := range Encode(tc.ids) {
			if !old[c.ID] {
				changed++
				bytes += len(c.Data)
			}
		}
		if changed == 0 || changed > tc.maxChanged {
			t.Errorf("%s: %d new chunks (%d bytes) of %d, want 1 to %d", tc.name, changed, bytes, len(old), tc.maxChanged)
		}
	}
}

func TestDecodeRefListRejects(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	good := Encode(randIDs(r, 3))[0].Data
	mod := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	cases := map[string][]byte{
		"short":      good[:5],
		"magic":      mod(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version":    mod(func(b []byte) []byte { b[4] = 2; return b }),
		"count high": mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[5:], 4); return b }),
		"truncated":  good[:len(good)-1],
		"trailing":   append(slices.Clone(good), 0),
		"over limit": mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[5:], MaxIDs+1); return b }),
		"unsorted":   mod(func(b []byte) []byte { b[header], b[header+32] = 0xff, 0; return b }),
		"duplicate":  mod(func(b []byte) []byte { copy(b[header+32:header+64], b[header:]); return b }),
	}
	for name, data := range cases {
		if _, err := Decode(data); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

// TestOpen: a list opens only under the ID it hashes to, and a list that hashes
// right but is malformed is refused too; both errors name the reference.
func TestOpen(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	c := Encode(randIDs(r, 10))[0]
	ids, err := Open(c.ID, c.Data)
	if err != nil || len(ids) != 10 {
		t.Fatalf("Open of a good list: %d ids, %v", len(ids), err)
	}
	other := randIDs(r, 1)[0]
	if _, err := Open(other, c.Data); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), other.Str()) || !strings.Contains(err.Error(), "does not hash") {
		t.Fatalf("Open under another ID: %v, want ErrInvalid naming it", err)
	}
	bad := append([]byte(nil), c.Data...)
	bad[0] ^= 0xff // wrong magic
	badID := chunk.ID(sha256.Sum256(bad))
	if _, err := Open(badID, bad); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), badID.Str()) {
		t.Fatalf("Open of a malformed list: %v, want ErrInvalid naming it", err)
	}
}

// BenchmarkRefListIncremental reports the reference-list bytes a backup uploads when it
// changes 10 files of a tree with 1,000,000 references (10 IDs replaced, plus a changed
// tree on each of their paths: 20 IDs replaced in all), with the content-defined split
// and, for comparison, with the fixed split of every MaxIDs IDs that came before it.
func BenchmarkRefListIncremental(b *testing.B) {
	r := rand.New(rand.NewPCG(11, 12))
	parent := randIDs(r, 1_000_000)
	child := slices.Clone(parent)
	for i := range 20 {
		child[i*49_999] = randIDs(r, 1)[0]
	}
	newBytes := func(enc func([]chunk.ID) []Chunk) (int, int) {
		old := map[chunk.ID]bool{}
		for _, c := range enc(parent) {
			old[c.ID] = true
		}
		n, bytes := 0, 0
		for _, c := range enc(child) {
			if !old[c.ID] {
				n++
				bytes += len(c.Data)
			}
		}
		return n, bytes
	}
	fixed := func(ids []chunk.ID) []Chunk {
		sorted := slices.Clone(ids)
		slices.SortFunc(sorted, func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) })
		var out []Chunk
		for len(sorted) > 0 {
			n := min(len(sorted), MaxIDs)
			out = append(out, encodeRun(sorted[:n]))
			sorted = sorted[n:]
		}
		return out
	}
	var cdcN, cdcBytes, fixedN, fixedBytes int
	for b.Loop() {
		cdcN, cdcBytes = newBytes(Encode)
		fixedN, fixedBytes = newBytes(fixed)
	}
	b.ReportMetric(float64(cdcBytes), "B-uploaded")
	b.ReportMetric(float64(cdcN), "chunks-uploaded")
	b.ReportMetric(float64(fixedBytes), "B-uploaded-fixed-split")
	b.ReportMetric(float64(fixedN), "chunks-uploaded-fixed-split")
}
