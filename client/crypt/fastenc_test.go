package crypt

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestFastEncoders: the auto policy's encoder of this build (libzstd with cgo,
// klauspost without) and klauspost's, which builds without cgo use, both write frames
// the one decoder reads back, fit in the room they reserve, give the same frame for the
// same input twice (sealing is deterministic), and compress text to within 5% of each
// other; with cgo built in, auto uses libzstd.
func TestFastEncoders(t *testing.T) {
	dec := newCompressor(MaxPlaintextSize)
	goFastest := newGoEncoder(zstd.SpeedFastest)
	inputs := [][]byte{textBytes(31, 1<<20), textBytes(32, 4<<20), randomBytes(33, 256<<10), make([]byte, 1<<20), textBytes(34, 100), {}}
	sizes := map[string]int{}
	for _, enc := range []zstdEncoder{newFastEncoder(), goFastest} {
		for _, in := range inputs {
			space := make([]byte, 0, enc.bound(len(in)))
			z := enc.encode(space, in)
			if z == nil {
				t.Fatalf("%s: no frame for %d bytes", enc.name(), len(in))
			}
			if len(z) > 0 && &z[:1][0] != &space[:1][0] {
				t.Errorf("%s: %d bytes: the frame outgrew bound(%d) = %d", enc.name(), len(in), len(in), cap(space))
			}
			again := enc.encode(make([]byte, 0, enc.bound(len(in))), in)
			if !bytes.Equal(z, again) {
				t.Errorf("%s: %d bytes: two encodings differ", enc.name(), len(in))
			}
			out, err := dec.decompress(nil, z, compZstd)
			if err != nil || !bytes.Equal(out, in) {
				t.Fatalf("%s: %d bytes: decoded %d bytes, err %v", enc.name(), len(in), len(out), err)
			}
			if len(in) == 4<<20 {
				sizes[enc.name()] = len(z)
			}
		}
	}
	c, g := sizes[newFastEncoder().name()], sizes[goFastest.name()]
	if float64(c) > 1.05*float64(g) || float64(g) > 1.05*float64(c) {
		t.Errorf("4 MiB of text: %s %d bytes, %s %d: more than 5%% apart", newFastEncoder().name(), c, goFastest.name(), g)
	}
	cgo := cgoBuilt()
	if got := newCompressor(MaxPlaintextSize).zstd.name(); strings.HasPrefix(got, "libzstd") != cgo {
		t.Errorf("auto uses %s in a build with cgo=%v", got, cgo)
	}
	t.Logf("%s/%s: auto uses %s", runtime.GOOS, runtime.GOARCH, newFastEncoder().name())
}
