package crypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"io"

	"golang.org/x/crypto/argon2"
)

// A key cache entry holds a vault's master key on the agent's own disk so that a command
// need not repeat the vault wrapping's full Argon2id derivation (3 passes over 64 MiB)
// each time it runs. The entry is sealed with AES-256-GCM under
//
//	Argon2id(HMAC-SHA-256(secret, "coffer key cache v1" ‖ passphrase), salt, KeyCacheArgon2Params())
//
// where secret is a host-local secret the cache never writes (cmd/coffer passes the
// agent's TLS private key). Opening it needs both the passphrase and the secret: the
// entry alone gives nothing, and guessing the passphrase from the entry plus the secret
// costs a memory-hard Argon2id per guess (OWASP's minimum for password storage). The
// entry names the vault key wrapping it was made from (its SHA-256) and is refused
// unless the vault still holds that wrapping, so a wrapping that is removed (a rotated
// or revoked passphrase) stops its cache entries too. Layout (KeyCacheEntrySize bytes):
//
//	magic "CFKC" | version 1 | SHA-256 of the wrapping [32] | salt [16] | nonce [12] |
//	AES-256-GCM(master key) [32 + 16 tag]
//
// The associated data is everything before the ciphertext plus the vault ID.
const (
	cacheMagic   = "CFKC"
	cacheVersion = 1

	cOffVersion = 4
	cOffWrap    = 5
	cOffSalt    = cOffWrap + sha256.Size // 37
	cOffNonce   = cOffSalt + saltSize    // 53
	cOffCT      = cOffNonce + nonceSize  // 65
	cacheSize   = cOffCT + KeySize + tagSize

	cacheContext = "coffer key cache v1"
)

// KeyCacheEntrySize is the length of an entry made by SealKeyCache.
const KeyCacheEntrySize = cacheSize

// KeyCacheArgon2Params returns the fixed cost of a key cache entry: 2 passes over
// 19 MiB with 1 lane, the minimum OWASP's Password Storage Cheat Sheet gives for Argon2id
// (about a fifth of the work of DefaultArgon2Params). It is part of the entry format
// (version 1); a different cost needs a new version.
func KeyCacheArgon2Params() Argon2Params {
	return Argon2Params{Time: 2, MemoryKiB: 19 << 10, Threads: 1}
}

// SealKeyCache makes a key cache entry for mk, the master key that wrapping (one of
// vault's key wrappings) opens with passphrase. secret is the host-local secret; salt and
// nonce come from rand (crypto/rand.Reader). An empty passphrase or secret, or an empty
// vault or wrapping, fails with ErrInvalid. The arguments are only read.
func SealKeyCache(mk MasterKey, vault string, wrapping, passphrase, secret []byte, rand io.Reader) ([]byte, error) {
	if err := checkCacheArgs(vault, passphrase, secret); err != nil {
		return nil, fmt.Errorf("crypt: seal key cache: %w", err)
	}
	if len(wrapping) == 0 {
		return nil, fmt.Errorf("crypt: seal key cache: %w: empty key wrapping", ErrInvalid)
	}
	e := make([]byte, cOffCT, cacheSize)
	copy(e, cacheMagic)
	e[cOffVersion] = cacheVersion
	wh := sha256.Sum256(wrapping)
	copy(e[cOffWrap:], wh[:])
	if _, err := io.ReadFull(rand, e[cOffSalt:cOffCT]); err != nil {
		return nil, fmt.Errorf("crypt: seal key cache: salt and nonce: %w", err)
	}
	aead, err := cacheAEAD(passphrase, secret, e[cOffSalt:cOffNonce])
	if err != nil {
		return nil, fmt.Errorf("crypt: seal key cache: %w", err)
	}
	return aead.Seal(e, e[cOffNonce:cOffCT], mk[:], cacheAD(e, vault)), nil
}

// OpenKeyCache recovers the master key from entry, a key cache entry of vault whose
// current key wrappings are wrappings. A truncated or malformed entry fails with
// ErrInvalid, an entry whose wrapping is no longer among wrappings with ErrStale, and
// one that does not open (another passphrase or secret, or altered bytes) with
// ErrWrongPassphrase. It returns the index in wrappings of the wrapping the entry stands
// for. The arguments are only read.
func OpenKeyCache(entry []byte, vault string, wrappings [][]byte, passphrase, secret []byte) (MasterKey, int, error) {
	if err := checkCacheArgs(vault, passphrase, secret); err != nil {
		return MasterKey{}, -1, fmt.Errorf("crypt: open key cache: %w", err)
	}
	switch {
	case len(entry) != cacheSize:
		return MasterKey{}, -1, fmt.Errorf("crypt: open key cache: %w: entry is %d bytes, want %d", ErrInvalid, len(entry), cacheSize)
	case !bytes.Equal(entry[:len(cacheMagic)], []byte(cacheMagic)):
		return MasterKey{}, -1, fmt.Errorf("crypt: open key cache: %w: bad magic %q, want %q", ErrInvalid, entry[:len(cacheMagic)], cacheMagic)
	case entry[cOffVersion] != cacheVersion:
		return MasterKey{}, -1, fmt.Errorf("crypt: open key cache: %w: unknown entry version %d (this build reads %d)", ErrInvalid, entry[cOffVersion], cacheVersion)
	}
	idx := -1
	for i, w := range wrappings {
		if wh := sha256.Sum256(w); bytes.Equal(wh[:], entry[cOffWrap:cOffSalt]) {
			idx = i
			break
		}
	}
	if idx < 0 {
		return MasterKey{}, -1, fmt.Errorf("crypt: open key cache: %w: the vault no longer holds the key wrapping of this entry", ErrStale)
	}
	aead, err := cacheAEAD(passphrase, secret, entry[cOffSalt:cOffNonce])
	if err != nil {
		return MasterKey{}, -1, fmt.Errorf("crypt: open key cache: %w", err)
	}
	var mk MasterKey
	if _, err := aead.Open(mk[:0], entry[cOffNonce:cOffCT], entry[cOffCT:], cacheAD(entry[:cOffCT], vault)); err != nil {
		return MasterKey{}, -1, fmt.Errorf("crypt: open key cache: %w", ErrWrongPassphrase)
	}
	return mk, idx, nil
}

func checkCacheArgs(vault string, passphrase, secret []byte) error {
	switch {
	case len(passphrase) == 0:
		return fmt.Errorf("%w: empty passphrase", ErrInvalid)
	case len(secret) == 0:
		return fmt.Errorf("%w: empty host secret", ErrInvalid)
	case vault == "":
		return fmt.Errorf("%w: empty vault ID", ErrInvalid)
	}
	return nil
}

// cacheAD is the associated data of an entry: its header and the vault ID.
func cacheAD(header []byte, vault string) []byte {
	ad := make([]byte, 0, cOffCT+len(vault))
	return append(append(ad, header[:cOffCT]...), vault...)
}

func cacheAEAD(passphrase, secret, salt []byte) (cipher.AEAD, error) {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(cacheContext))
	m.Write(passphrase)
	pre := m.Sum(nil)
	p := KeyCacheArgon2Params()
	kek := argon2.IDKey(pre, salt, p.Time, p.MemoryKiB, p.Threads, KeySize)
	clear(pre)
	block, err := aes.NewCipher(kek)
	clear(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
