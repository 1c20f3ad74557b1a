package crypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the Argon2id cost parameters of a passphrase wrapping. They are stored
// in the wrapping, so changing the defaults never breaks existing wrappings.
type Argon2Params struct {
	Time      uint32 // passes over memory, 1..MaxArgon2Time
	MemoryKiB uint32 // memory in KiB, 8*Threads..MaxArgon2MemoryKiB
	Threads   uint8  // lanes, ≥ 1
}

// Bounds on Argon2 parameters that UnwrapKey accepts, so that a crafted wrapping cannot
// make an agent spend unbounded memory or time.
const (
	MaxArgon2Time      = 64
	MaxArgon2MemoryKiB = 4 << 20 // 4 GiB
)

// DefaultArgon2Params returns the production cost: 3 passes over 64 MiB with 4 lanes
// (about 0.1-0.2 s per wrap or unwrap on the project's machine class).
func DefaultArgon2Params() Argon2Params {
	return Argon2Params{Time: 3, MemoryKiB: 64 << 10, Threads: 4}
}

// TestArgon2Params returns a tiny cost (1 pass, 64 KiB, 1 lane) for tests only. NEVER use
// it in production: a passphrase wrapped with it can be brute-forced cheaply.
func TestArgon2Params() Argon2Params {
	return Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}
}

// Validate reports the first out-of-range parameter (ErrInvalid).
func (p Argon2Params) Validate() error {
	switch {
	case p.Time < 1 || p.Time > MaxArgon2Time:
		return fmt.Errorf("%w: argon2 time %d, want 1..%d", ErrInvalid, p.Time, MaxArgon2Time)
	case p.Threads < 1:
		return fmt.Errorf("%w: argon2 threads 0, want at least 1", ErrInvalid)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > MaxArgon2MemoryKiB:
		return fmt.Errorf("%w: argon2 memory %d KiB, want %d..%d for %d threads", ErrInvalid, p.MemoryKiB, 8*uint32(p.Threads), MaxArgon2MemoryKiB, p.Threads)
	}
	return nil
}

// Wrapping layout (FORMAT.md, "Passphrase wrapping").
const (
	wrapMagic   = "CFKW"
	wrapVersion = 1
	kdfArgon2id = 1
	saltSize    = 16

	wOffVersion = 4
	wOffKDF     = 5
	wOffTime    = 6
	wOffMemory  = 10
	wOffThreads = 14
	wOffSalt    = 15
	wOffNonce   = wOffSalt + saltSize        // 31
	wOffCT      = wOffNonce + nonceSize      // 43
	wrapSize    = wOffCT + KeySize + tagSize // 91
)

// WrappedKeySize is the length of a wrapping made by WrapKey.
const WrappedKeySize = wrapSize

// WrapKey encrypts mk under a key derived from passphrase with Argon2id (params p, a fresh
// 16-byte salt from rand) using AES-256-GCM with a fresh nonce from rand. The result
// (WrappedKeySize bytes) carries the parameters and salt, so UnwrapKey needs only the
// passphrase. Callers pass crypto/rand.Reader as rand. An empty passphrase or invalid p
// fails with ErrInvalid. passphrase is only read.
func WrapKey(mk MasterKey, passphrase []byte, p Argon2Params, rand io.Reader) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("crypt: wrap key: %w: empty passphrase", ErrInvalid)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("crypt: wrap key: %w", err)
	}
	w := make([]byte, wOffCT, wrapSize)
	copy(w, wrapMagic)
	w[wOffVersion] = wrapVersion
	w[wOffKDF] = kdfArgon2id
	binary.BigEndian.PutUint32(w[wOffTime:], p.Time)
	binary.BigEndian.PutUint32(w[wOffMemory:], p.MemoryKiB)
	w[wOffThreads] = p.Threads
	if _, err := io.ReadFull(rand, w[wOffSalt:wOffCT]); err != nil {
		return nil, fmt.Errorf("crypt: wrap key: salt and nonce: %w", err)
	}
	aead, err := wrapAEAD(passphrase, w[wOffSalt:wOffNonce], p)
	if err != nil {
		return nil, fmt.Errorf("crypt: wrap key: %w", err)
	}
	return aead.Seal(w, w[wOffNonce:wOffCT], mk[:], w[:wOffCT]), nil
}

// UnwrapKey recovers the master key from a wrapping made by WrapKey. A truncated or
// malformed wrapping (length, magic, version, KDF, parameters out of range) fails with
// ErrInvalid before any key derivation; a well-formed wrapping that does not open fails
// with ErrWrongPassphrase. wrapped and passphrase are only read.
func UnwrapKey(wrapped []byte, passphrase []byte) (MasterKey, error) {
	if len(passphrase) == 0 {
		return MasterKey{}, fmt.Errorf("crypt: unwrap key: %w: empty passphrase", ErrInvalid)
	}
	if len(wrapped) != wrapSize {
		return MasterKey{}, fmt.Errorf("crypt: unwrap key: %w: wrapping is %d bytes, want %d", ErrInvalid, len(wrapped), wrapSize)
	}
	if !bytes.Equal(wrapped[:len(wrapMagic)], []byte(wrapMagic)) {
		return MasterKey{}, fmt.Errorf("crypt: unwrap key: %w: bad magic %q, want %q", ErrInvalid, wrapped[:len(wrapMagic)], wrapMagic)
	}
	if v := wrapped[wOffVersion]; v != wrapVersion {
		return MasterKey{}, fmt.Errorf("crypt: unwrap key: %w: unknown wrapping version %d (this build reads %d)", ErrInvalid, v, wrapVersion)
	}
	if kdf := wrapped[wOffKDF]; kdf != kdfArgon2id {
		return MasterKey{}, fmt.Errorf("crypt: unwrap key: %w: unknown key derivation %d", ErrInvalid, kdf)
	}
	p := Argon2Params{
		Time:      binary.BigEndian.Uint32(wrapped[wOffTime:]),
		MemoryKiB: binary.BigEndian.Uint32(wrapped[wOffMemory:]),
		Threads:   wrapped[wOffThreads],
	}
	if err := p.Validate(); err != nil {
		return MasterKey{}, fmt.Errorf("crypt: unwrap key: %w", err)
	}
	aead, err := wrapAEAD(passphrase, wrapped[wOffSalt:wOffNonce], p)
	if err != nil {
		return MasterKey{}, fmt.Errorf("crypt: unwrap key: %w", err)
	}
	var mk MasterKey
	if _, err := aead.Open(mk[:0], wrapped[wOffNonce:wOffCT], wrapped[wOffCT:], wrapped[:wOffCT]); err != nil {
		return MasterKey{}, fmt.Errorf("crypt: unwrap key: %w", ErrWrongPassphrase)
	}
	return mk, nil
}

func wrapAEAD(passphrase, salt []byte, p Argon2Params) (cipher.AEAD, error) {
	kek := argon2.IDKey(passphrase, salt, p.Time, p.MemoryKiB, p.Threads, KeySize)
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
