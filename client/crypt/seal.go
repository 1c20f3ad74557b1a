package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"encoding/binary"
	"fmt"
	"slices"
	"unsafe"

	sha256simd "github.com/minio/sha256-simd"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Envelope layout (FORMAT.md): magic, version, key generation, compression, nonce, then
// the AES-256-GCM ciphertext and tag of the (maybe compressed) plaintext. The header is
// the additional authenticated data.
const (
	envMagic = 0xC0
	// envVersion is the envelope of key generation 0, the data key derived from the
	// master key; envVersionEpoch the envelope of generations ≥ 1, random data keys of
	// a Keyring's epochs. The layout is the same; the version says where the key
	// generation's data key comes from, so that a reader that predates epochs refuses
	// such an envelope by its version rather than mistaking it for damage.
	envVersion      = 1
	envVersionEpoch = 2

	compNone = 0
	compZstd = 1
	compS2   = 2

	offMagic   = 0
	offVersion = 1
	offGen     = 2
	offComp    = 6
	offNonce   = 7
	nonceSize  = 12
	headerSize = offNonce + nonceSize // 19
	tagSize    = 16

	// Overhead is the size of an envelope minus its body: Seal of n bytes stored
	// uncompressed returns exactly n+Overhead bytes.
	Overhead = headerSize + tagSize // 35
)

// Seal appends the sealed envelope of plain to dst and returns the extended slice. id must
// be k.ChunkID(plain): the per-chunk key is derived from it and Open checks the content
// against it (Seal does not recompute it). plain is compressed with zstd when that saves at
// least 1/8 of it, then encrypted with AES-256-GCM under the per-chunk key and a 96-bit
// synthetic nonce (a MAC of header and body), so sealing the same chunk twice gives the
// same envelope.
//
// plain is only read. If dst has enough spare capacity (len(plain)+Overhead plus a little
// compression slack, see FORMAT.md) Seal allocates nothing; otherwise it grows dst once.
// The spare capacity of dst must not overlap plain (ErrInvalid). Plaintexts larger than
// MaxPlaintextSize fail with ErrInvalid. Safe for concurrent use.
func (k *Keys) Seal(dst []byte, id chunk.ID, plain []byte) ([]byte, error) {
	return k.seal(dst, id, plain, k.comp)
}

// SealCap is the spare capacity of dst with which Seal of n bytes allocates nothing.
func (k *Keys) SealCap(n int) int { return headerSize + k.comp.bound(n) + tagSize }

// PolicySealer seals with the vault's keys under a compression policy other than the
// default (Keys.WithCompression). Safe for concurrent use.
type PolicySealer struct {
	k    *Keys
	comp *compressor
}

// WithCompression returns a sealer that compresses with policy p; the envelopes it makes
// open with k (or any Keys of the vault) like Seal's.
func (k *Keys) WithCompression(p Compression) *PolicySealer {
	if p == CompressionAuto {
		return &PolicySealer{k: k, comp: k.comp}
	}
	return &PolicySealer{k: k, comp: newPolicyCompressor(p, k.comp.maxOut, k.comp.dec)}
}

// SealCap is the spare capacity of dst with which Seal of n bytes allocates nothing.
func (s *PolicySealer) SealCap(n int) int { return headerSize + s.comp.bound(n) + tagSize }

// Seal is Keys.Seal under the sealer's compression policy.
func (s *PolicySealer) Seal(dst []byte, id chunk.ID, plain []byte) ([]byte, error) {
	return s.k.seal(dst, id, plain, s.comp)
}

func (k *Keys) seal(dst []byte, id chunk.ID, plain []byte, comp *compressor) ([]byte, error) {
	if len(plain) > MaxPlaintextSize {
		return nil, fmt.Errorf("crypt: seal chunk %s: %w: plaintext is %d bytes, max %d", id.Str(), ErrInvalid, len(plain), MaxPlaintextSize)
	}
	start := len(dst)
	need := headerSize + comp.bound(len(plain)) + tagSize
	out := slices.Grow(dst, need)
	if overlaps(out[start:start+need], plain) {
		return nil, fmt.Errorf("crypt: seal chunk %s: %w: dst's spare capacity overlaps the plaintext", id.Str(), ErrInvalid)
	}
	out = out[:start+headerSize]
	hdr := out[start:]
	hdr[offMagic] = envMagic
	hdr[offVersion] = envVersion
	if k.gen != 0 {
		hdr[offVersion] = envVersionEpoch
	}
	binary.BigEndian.PutUint32(hdr[offGen:], k.gen)
	hdr[offComp] = compNone
	body := plain
	if z := comp.compress(out[len(out):cap(out)], plain); z != nil {
		hdr[offComp] = comp.code()
		body = z // lives at out[len(out):]: GCM seals it in place
	}
	var key [KeySize]byte
	k.chunkKey(id, &key)
	// Synthetic nonce (SIV-style): a MAC of the header and body under the chunk key. Two
	// seals of the same chunk give the same envelope, so the k+m shards an interrupted
	// upload left behind agree with the ones a rerun writes; two different bodies under
	// one chunk key (another compressor version) get different nonces.
	nonce := hdr[offNonce:headerSize]
	mac := hmac.New(sha256simd.New, key[:])
	mac.Write([]byte(nonceDomain))
	mac.Write(hdr[:offNonce])
	mac.Write(body)
	var sum [sha256simd.Size]byte
	copy(nonce, mac.Sum(sum[:0]))
	aead, err := newGCM(&key)
	if err != nil {
		return nil, fmt.Errorf("crypt: seal chunk %s: %w", id.Str(), err)
	}
	return aead.Seal(out, nonce, body, hdr), nil
}

// Open checks and decrypts one envelope made by Seal, appends the plaintext to dst and
// returns the extended slice. It verifies, in order: the header (magic, version, key
// generation, compression; truncated input), the GCM tag (any changed byte, or another
// vault's keys), the compressed stream (at most MaxPlaintextSize bytes of output), and
// finally that ChunkID(plaintext) == id. Every failure wraps ErrCorrupt and names what
// failed, except a dst whose spare capacity overlaps sealed (ErrInvalid).
//
// sealed is only read. On error the returned slice is nil and dst's spare capacity may
// have been written. Safe for concurrent use.
func (k *Keys) Open(dst []byte, id chunk.ID, sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("crypt: open chunk %s: %w: envelope truncated: %d bytes, need at least %d", id.Str(), ErrCorrupt, len(sealed), Overhead)
	}
	hdr := sealed[:headerSize]
	if hdr[offMagic] != envMagic {
		return nil, fmt.Errorf("crypt: open chunk %s: %w: bad magic byte 0x%02x, want 0x%02x", id.Str(), ErrCorrupt, hdr[offMagic], envMagic)
	}
	g := binary.BigEndian.Uint32(hdr[offGen:])
	switch v := hdr[offVersion]; {
	case v == envVersion && g != 0:
		return nil, fmt.Errorf("crypt: open chunk %s: %w: envelope version %d with key generation %d (version %d holds generation 0 only)", id.Str(), ErrCorrupt, v, g, envVersion)
	case v == envVersionEpoch && g == 0:
		return nil, fmt.Errorf("crypt: open chunk %s: %w: envelope version %d with key generation 0 (version %d holds epochs from 1)", id.Str(), ErrCorrupt, v, envVersionEpoch)
	case v != envVersion && v != envVersionEpoch:
		return nil, fmt.Errorf("crypt: open chunk %s: %w: unknown envelope version %d (this build reads %d and %d)", id.Str(), ErrCorrupt, v, envVersion, envVersionEpoch)
	}
	dk := k.data[g]
	if dk == nil {
		return nil, fmt.Errorf("crypt: open chunk %s: %w: sealed under key epoch %d, which these keys do not hold (newest %d): written after this holder's key wrap was removed, or a damaged header", id.Str(), ErrNoEpochKey, g, k.gen)
	}
	comp := hdr[offComp]
	if comp != compNone && comp != compZstd && comp != compS2 {
		return nil, fmt.Errorf("crypt: open chunk %s: %w: unknown compression %d", id.Str(), ErrCorrupt, comp)
	}
	nonce := hdr[offNonce:headerSize]
	ct := sealed[headerSize:]
	aead, err := chunkAEAD(dk, id)
	if err != nil {
		return nil, fmt.Errorf("crypt: open chunk %s: %w", id.Str(), err)
	}
	start := len(dst)
	var out []byte
	if comp == compNone {
		if n := len(ct) - tagSize; cap(dst)-start >= n && overlaps(dst[start:start+n], sealed) {
			return nil, fmt.Errorf("crypt: open chunk %s: %w: dst's spare capacity overlaps the envelope", id.Str(), ErrInvalid)
		}
		if out, err = aead.Open(dst, nonce, ct, hdr); err != nil {
			return nil, fmt.Errorf("crypt: open chunk %s: %w: authentication failed (tampered, or another vault's key)", id.Str(), ErrCorrupt)
		}
	} else {
		sp, _ := k.scratch.Get().(*[]byte)
		if sp == nil {
			sp = new([]byte)
		}
		z, err := aead.Open((*sp)[:0], nonce, ct, hdr)
		if err != nil {
			k.putScratch(sp, nil)
			return nil, fmt.Errorf("crypt: open chunk %s: %w: authentication failed (tampered, or another vault's key)", id.Str(), ErrCorrupt)
		}
		out, err = k.comp.decompress(dst, z, comp)
		k.putScratch(sp, z)
		if err != nil {
			return nil, fmt.Errorf("crypt: open chunk %s: %w: decompress: %v", id.Str(), ErrCorrupt, err)
		}
	}
	if k.ChunkID(out[start:]) != id {
		return nil, fmt.Errorf("crypt: open chunk %s: %w: content does not match its id", id.Str(), ErrCorrupt)
	}
	return out, nil
}

// putScratch returns an Open scratch buffer to the pool, keeping the larger of the old
// buffer and z (GCM grows it when it is too small); buffers above MaxPlaintextSize/4 are
// dropped rather than pinned in the pool.
func (k *Keys) putScratch(sp *[]byte, z []byte) {
	if cap(z) > cap(*sp) {
		*sp = z[:0]
	}
	if cap(*sp) <= MaxPlaintextSize/4 {
		k.scratch.Put(sp)
	}
}

// chunkAEAD returns AES-256-GCM under the chunk's own key of the generation Seal writes.
func (k *Keys) chunkAEAD(id chunk.ID) (cipher.AEAD, error) { return chunkAEAD(k.cur, id) }

// chunkAEAD returns AES-256-GCM under the chunk's own key of generation d.
func chunkAEAD(d *dataKey, id chunk.ID) (cipher.AEAD, error) {
	var key [KeySize]byte
	d.chunkKey(id, &key)
	return newGCM(&key)
}

// nonceDomain separates the synthetic-nonce MAC from every other use of a chunk key.
const nonceDomain = "coffer chunk nonce v1\x00"

func newGCM(key *[KeySize]byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// overlaps reports whether x and y share memory (the check of crypto/internal/alias).
func overlaps(x, y []byte) bool {
	return len(x) > 0 && len(y) > 0 &&
		uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}
