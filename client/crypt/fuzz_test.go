package crypt

import (
	"bytes"
	"crypto/rand"
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
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNoEpochKey) {
				t.Fatalf("error is not ErrCorrupt or ErrNoEpochKey: %v", err)
			}
			return
		}
		if k.ChunkID(out) != id {
			t.Fatalf("Open returned content that does not match id")
		}
	})
}

// FuzzSealOpen: any plaintext seals (deterministically: the nonce is synthetic) and
// opens back to itself under its ID, and flipping any one byte of the envelope makes
// Open fail with ErrCorrupt.
func FuzzSealOpen(f *testing.F) {
	k := DeriveKeys(testMaster(31))
	f.Add(textBytes(3, 5000), uint16(7))
	f.Add(randomBytes(4, 100), uint16(0))
	f.Add([]byte{}, uint16(1))
	f.Fuzz(func(t *testing.T, plain []byte, flip uint16) {
		if len(plain) > 1<<20 {
			return
		}
		id := k.ChunkID(plain)
		sealed, err := k.Seal(nil, id, plain)
		if err != nil {
			t.Fatalf("seal: %v", err)
		}
		again, err := k.Seal(nil, id, plain)
		if err != nil || !bytes.Equal(sealed, again) {
			t.Fatalf("sealing twice gives different envelopes (%v)", err)
		}
		out, err := k.Open(nil, id, sealed)
		if err != nil || !bytes.Equal(out, plain) {
			t.Fatalf("open: %v, %d bytes, want %d", err, len(out), len(plain))
		}
		bad := bytes.Clone(sealed)
		bad[int(flip)%len(bad)] ^= 0x01
		if _, err := k.Open(nil, id, bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open of a damaged envelope (byte %d): %v, want ErrCorrupt", int(flip)%len(bad), err)
		}
	})
}

// FuzzParseKeyring: ParseKeyring never panics; what it accepts re-encodes to the input.
func FuzzParseKeyring(f *testing.F) {
	r := NewKeyring("v", testMaster(3))
	b, _ := r.MarshalBinary()
	f.Add(b)
	r.Epochs = []EpochKey{{Epoch: 1, Key: testMaster(4)}}
	b, _ = r.MarshalBinary()
	f.Add(b)
	f.Add([]byte("CFKR\x01\x00\x01v"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ParseKeyring(b, "v")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			return
		}
		again, err := got.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted keyring does not re-encode to its input: %v", err)
		}
	})
}

// FuzzOpenIdentity: a passphrase identity blob from the vault record never panics the
// decoder; errors are ErrInvalid or ErrWrongPassphrase.
func FuzzOpenIdentity(f *testing.F) {
	id, err := NewIdentity()
	if err != nil {
		f.Fatal(err)
	}
	blob, _, err := SealIdentity(id, []byte("pw"), TestArgon2Params(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob)
	f.Add([]byte("CFKI\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, err := OpenIdentity(b, []byte("pw"))
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrWrongPassphrase) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}

// FuzzOpenKeyring: a sealed keyring from the vault record never panics the decoder.
func FuzzOpenKeyring(f *testing.F) {
	id, err := NewIdentity()
	if err != nil {
		f.Fatal(err)
	}
	s, err := SealKeyring(NewKeyring("v", testMaster(2)), id.Recipient())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(s)
	f.Add([]byte("age-encryption.org/v1\n-> X25519 \n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := OpenKeyring(b, "v", id)
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrWrongKey) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}
