package crypt

import (
	"errors"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// FuzzOpen: Open never panics; it either fails with ErrCorrupt or returns a plaintext
// whose keyed ID is the one asked for.
func FuzzOpen(f *testing.F) {
	k := DeriveKeys(testMaster(30))
	var ids []chunk.ID
	for i, p := range [][]byte{textBytes(1, 3000), randomBytes(2, 200), {}} {
		id := k.ChunkID(p)
		ids = append(ids, id)
		s, err := k.Seal(nil, id, p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), s)
	}
	f.Add(uint8(0), []byte{envMagic, envVersion, 0, 0, 0, 0, compZstd})
	f.Add(uint8(1), make([]byte, Overhead))
	f.Fuzz(func(t *testing.T, which uint8, sealed []byte) {
		id := ids[int(which)%len(ids)]
		out, err := k.Open(nil, id, sealed)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error is not ErrCorrupt: %v", err)
			}
			return
		}
		if k.ChunkID(out) != id {
			t.Fatalf("Open returned content that does not match id")
		}
	})
}
