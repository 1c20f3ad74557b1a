package crypt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// TestCompressionPolicies: each policy writes its codec's compression byte, every
// envelope opens with the vault's plain Keys, max stores no more than auto, fast uses S2,
// off stores bodies as they are, and incompressible data is stored raw under every policy.
func TestCompressionPolicies(t *testing.T) {
	k := DeriveKeys(testMaster(21))
	text, random := textBytes(21, 1<<20), randomBytes(21, 1<<20)
	sizes := map[Compression]int{}
	for _, p := range []Compression{CompressionAuto, CompressionFast, CompressionMax, CompressionOff} {
		t.Run(p.String(), func(t *testing.T) {
			s := k.WithCompression(p)
			for _, plain := range [][]byte{text, random, make([]byte, 1<<20), textBytes(22, 300)} {
				id := k.ChunkID(plain)
				dst := make([]byte, 0, s.SealCap(len(plain)))
				env, err := s.Seal(dst, id, plain)
				if err != nil {
					t.Fatal(err)
				}
				if &env[:1][0] != &dst[:1][0] {
					t.Errorf("Seal of %d bytes grew a dst of SealCap", len(plain))
				}
				want := map[Compression]byte{CompressionAuto: compZstd, CompressionMax: compZstd, CompressionFast: compS2, CompressionOff: compNone}[p]
				if bytes.Equal(plain, random) {
					want = compNone
				}
				if env[offComp] != want {
					t.Errorf("%d bytes: compression byte %d, want %d", len(plain), env[offComp], want)
				}
				got, err := k.Open(nil, id, env)
				if err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("open: %d bytes, err %v", len(got), err)
				}
				if bytes.Equal(plain, text) {
					sizes[p] = len(env)
				}
			}
		})
	}
	if sizes[CompressionMax] > sizes[CompressionAuto] || sizes[CompressionAuto] >= sizes[CompressionOff] || sizes[CompressionFast] >= sizes[CompressionOff] {
		t.Errorf("stored sizes of 1 MiB of text: %v", sizes)
	}
}

func TestParseCompression(t *testing.T) {
	for i, n := range CompressionNames {
		p, err := ParseCompression(n)
		if err != nil || p != Compression(i) || p.String() != n {
			t.Errorf("ParseCompression(%q) = %v, %v", n, p, err)
		}
	}
	if p, err := ParseCompression(""); err != nil || p != CompressionAuto {
		t.Errorf("empty name: %v, %v", p, err)
	}
	if _, err := ParseCompression("zstd-19"); !errors.Is(err, ErrUnknownCompression) || !strings.Contains(err.Error(), "auto, fast, max or off") {
		t.Errorf("unknown name: %v", err)
	}
}

// TestOpenS2Bound: an S2 body that claims more than the decompression bound is refused
// before anything is allocated for it, and a damaged S2 body is ErrCorrupt.
func TestOpenS2Bound(t *testing.T) {
	const bound = 1 << 20
	k := DeriveKeys(testMaster(23))
	k.comp = newCompressor(bound)
	seal := func(id chunk.ID, z []byte) []byte {
		hdr := []byte{envMagic, envVersion, 0, 0, 0, 0, compS2}
		hdr = append(hdr, make([]byte, nonceSize)...)
		aead, err := k.chunkAEAD(id)
		if err != nil {
			t.Fatal(err)
		}
		return aead.Seal(bytes.Clone(hdr), hdr[offNonce:], z, hdr)
	}
	fits := textBytes(23, bound)
	id := k.ChunkID(fits)
	if got, err := k.Open(nil, id, seal(id, s2.Encode(nil, fits))); err != nil || !bytes.Equal(got, fits) {
		t.Fatalf("S2 body of exactly the bound: %d bytes, err = %v", len(got), err)
	}
	huge := binary.AppendUvarint(nil, 1<<40) // a length claim alone
	id = chunk.ID{0xbb}
	if _, err := k.Open(nil, id, seal(id, huge)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "decompress") {
		t.Fatalf("S2 claiming 1 TiB: err = %v, want ErrCorrupt naming decompress", err)
	}
	z := s2.Encode(nil, fits)
	z[len(z)/2] ^= 0xff
	if _, err := k.Open(nil, id, seal(id, z)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged S2 body: err = %v, want ErrCorrupt", err)
	}
}
