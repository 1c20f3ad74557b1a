package crypt

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	sha256simd "github.com/minio/sha256-simd"
	"golang.org/x/crypto/hkdf"
)

// KeySize is the length of every symmetric key in the hierarchy.
const KeySize = 32

// HKDF info labels of the key hierarchy (FORMAT.md). They are part of the format: changing
// one changes every chunk ID or key derived from it.
const (
	infoID    = "coffer id v1"
	infoData  = "coffer data v1"
	infoGear  = "coffer gear v1"
	infoChunk = "coffer chunk v1"
)

// MasterKey is a vault's random root key. It is stored only wrapped (see WrapKey). Its
// String and GoString methods redact it so that it cannot leak through logs or %v.
type MasterKey [KeySize]byte

// String redacts the key.
func (MasterKey) String() string { return "crypt.MasterKey(redacted)" }

// GoString redacts the key.
func (MasterKey) GoString() string { return "crypt.MasterKey(redacted)" }

// NewMasterKey reads a fresh master key from rand (callers pass crypto/rand.Reader). It
// fails if rand fails or returns 32 zero bytes (a broken source).
func NewMasterKey(rand io.Reader) (MasterKey, error) {
	var mk MasterKey
	if _, err := io.ReadFull(rand, mk[:]); err != nil {
		return MasterKey{}, fmt.Errorf("crypt: new master key: %w", err)
	}
	if mk == (MasterKey{}) {
		return MasterKey{}, fmt.Errorf("crypt: new master key: random source returned all zeros")
	}
	return mk, nil
}

// Keys is a vault's derived key set: the ID key, the gear seed and the data key of every
// key generation (epoch) it holds, sealing under the newest. Build it with DeriveKeys
// (generation 0 only) or Keyring.Keys. A *Keys is safe for concurrent use; it must not be
// copied after first use.
type Keys struct {
	idKey    [KeySize]byte
	gearSeed [KeySize]byte
	gen      uint32              // the generation Seal writes
	cur      *dataKey            // data[gen]
	data     map[uint32]*dataKey // read-only after construction

	idMACs  sync.Pool // *macState keyed with idKey
	scratch sync.Pool // *[]byte, decrypted compressed bodies in Open

	comp *compressor
}

// dataKey is one generation's data key, as the PRK of its per-chunk keys.
type dataKey struct {
	prk  [KeySize]byte // HKDF-Extract(salt = none, data key)
	macs sync.Pool     // *macState keyed with prk
}

func newDataKey(key *[KeySize]byte) *dataKey {
	d := &dataKey{}
	copy(d.prk[:], hkdf.Extract(sha256.New, key[:], nil))
	d.macs.New = func() any { return &macState{h: hmac.New(sha256simd.New, d.prk[:])} }
	return d
}

// macState is a pooled HMAC-SHA-256 with its own output buffer, so that computing a sum
// allocates nothing.
type macState struct {
	h    hash.Hash
	sum  [sha256simd.Size]byte
	info [len(infoChunk) + chunk.Size + 1]byte // HKDF-Expand input of chunkKey
}

// DeriveKeys expands mk into the vault's keys with HKDF-SHA-256 (no salt), one info label
// per key: "coffer id v1", "coffer data v1", "coffer gear v1".
func DeriveKeys(mk MasterKey) *Keys {
	return deriveKeys(mk, nil)
}

// deriveKeys is DeriveKeys plus the random data keys of generations 1.. (epochs, in
// ascending order, as a validated Keyring holds them); Seal uses the last generation.
func deriveKeys(mk MasterKey, epochs []EpochKey) *Keys {
	k := &Keys{comp: newCompressor(MaxPlaintextSize), data: make(map[uint32]*dataKey, 1+len(epochs))}
	derive(mk[:], infoID, k.idKey[:])
	var gen0 [KeySize]byte
	derive(mk[:], infoData, gen0[:])
	k.data[0] = newDataKey(&gen0)
	clear(gen0[:])
	for i := range epochs {
		k.data[epochs[i].Epoch] = newDataKey(&epochs[i].Key)
		k.gen = epochs[i].Epoch
	}
	k.cur = k.data[k.gen]
	derive(mk[:], infoGear, k.gearSeed[:])
	k.idMACs.New = func() any { return &macState{h: hmac.New(sha256simd.New, k.idKey[:])} }
	return k
}

func derive(secret []byte, info string, out []byte) {
	r := hkdf.New(sha256.New, secret, nil, []byte(info))
	if _, err := io.ReadFull(r, out); err != nil {
		// NB: HKDF-SHA-256 can produce 255*32 bytes; 32 never fails.
		panic("crypt: hkdf: " + err.Error())
	}
}

// GearSeed returns the seed of the vault's chunker gear table (see client/chunker).
func (k *Keys) GearSeed() [32]byte { return k.gearSeed }

// Generation returns the data key generation (key epoch) these keys seal under: 0 for
// DeriveKeys, the keyring's newest epoch for Keyring.Keys.
func (k *Keys) Generation() uint32 { return k.gen }

// ChunkID returns HMAC-SHA-256(ID key, data): the chunk's keyed ID. data is only read.
// Safe for concurrent use.
func (k *Keys) ChunkID(data []byte) chunk.ID {
	m := k.idMACs.Get().(*macState)
	m.h.Reset()
	m.h.Write(data)
	var id chunk.ID
	copy(id[:], m.h.Sum(m.sum[:0]))
	k.idMACs.Put(m)
	return id
}

// chunkKey is the per-chunk key of id under the generation Seal writes.
func (k *Keys) chunkKey(id chunk.ID, out *[KeySize]byte) { k.cur.chunkKey(id, out) }

// chunkKey returns the per-chunk key HKDF-SHA-256(data key, info = "coffer chunk v1" || id)
// into out. With the extract step precomputed in prk, the 32-byte HKDF-Expand output
// is T(1) = HMAC(PRK, info || 0x01), computed here on a pooled HMAC state
// (TestChunkKeyMatchesHKDF checks it against x/crypto/hkdf).
func (d *dataKey) chunkKey(id chunk.ID, out *[KeySize]byte) {
	m := d.macs.Get().(*macState)
	m.h.Reset()
	copy(m.info[:], infoChunk)
	copy(m.info[len(infoChunk):], id[:])
	m.info[len(m.info)-1] = 1
	m.h.Write(m.info[:])
	copy(out[:], m.h.Sum(m.sum[:0]))
	d.macs.Put(m)
}
