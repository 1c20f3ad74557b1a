package crypt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// MaxEpochs bounds the key epochs of one keyring (and so the size a crafted keyring can
// make an agent allocate): one rotation a day for 11 years.
const MaxEpochs = 4096

// maxVaultName bounds the vault ID recorded in a keyring.
const maxVaultName = 1024

// Keyring layout (FORMAT.md, "Keyring"): magic, version, vault ID, master key, epochs.
const (
	ringMagic   = "CFKR"
	ringVersion = 1
)

// EpochKey is the random data key of one key epoch (data key generation ≥ 1). Its String
// and GoString methods redact the key.
type EpochKey struct {
	Epoch uint32
	Key   [KeySize]byte
}

// String redacts the key.
func (e EpochKey) String() string {
	return fmt.Sprintf("crypt.EpochKey{Epoch: %d, Key: redacted}", e.Epoch)
}

// GoString redacts the key.
func (e EpochKey) GoString() string { return e.String() }

// Keyring is everything a holder of a vault's key gets by unwrapping it: the vault's
// master key (root of chunk IDs, the gear seed and the generation-0 data key) and the
// random data keys of every later key epoch, oldest first. A keyring names its vault, so
// one vault's wrap cannot be passed off as another's.
//
// The master key never changes (chunk IDs and chunk boundaries, and so deduplication,
// depend on it); Rotate adds an epoch. Epoch keys are random, not derived from the master
// key, so a holder that kept only the master key (or an older keyring) cannot compute
// them. A Keyring is a value: its methods never change it.
type Keyring struct {
	Vault  string
	Master MasterKey
	Epochs []EpochKey // strictly ascending from 1, no gaps
}

// NewKeyring returns the keyring of a new vault's master key: no epochs yet, so the
// vault seals under generation 0 (envelope version 1) until the first rotation.
func NewKeyring(vault string, mk MasterKey) *Keyring { return &Keyring{Vault: vault, Master: mk} }

// Epoch returns the newest key epoch: the generation new chunks are sealed under.
func (r *Keyring) Epoch() uint32 {
	if len(r.Epochs) == 0 {
		return 0
	}
	return r.Epochs[len(r.Epochs)-1].Epoch
}

// Keys derives the vault's keys: IDs and gear seed from the master key, a data key for
// every epoch (Open reads all of them), sealing under the newest.
func (r *Keyring) Keys() *Keys { return deriveKeys(r.Master, r.Epochs) }

// Rotate returns a copy of r with one more epoch whose random data key is read from rand
// (crypto/rand.Reader). It fails after MaxEpochs epochs, or if rand fails or returns an
// all-zero key.
func (r *Keyring) Rotate(rand io.Reader) (*Keyring, error) {
	if len(r.Epochs) >= MaxEpochs {
		return nil, fmt.Errorf("crypt: rotate: %w: the keyring holds %d epochs, the most there can be", ErrInvalid, len(r.Epochs))
	}
	e := EpochKey{Epoch: r.Epoch() + 1}
	if _, err := io.ReadFull(rand, e.Key[:]); err != nil {
		return nil, fmt.Errorf("crypt: rotate: %w", err)
	}
	if e.Key == ([KeySize]byte{}) {
		return nil, fmt.Errorf("crypt: rotate: random source returned all zeros")
	}
	out := &Keyring{Vault: r.Vault, Master: r.Master, Epochs: append(slices.Clone(r.Epochs), e)}
	return out, nil
}

// MarshalBinary encodes the keyring (FORMAT.md, "Keyring"). The result holds every key in
// the clear: it exists only to be sealed to a holder (SealKeyring).
func (r *Keyring) MarshalBinary() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("crypt: keyring: %w", err)
	}
	b := make([]byte, 0, len(ringMagic)+1+2+len(r.Vault)+KeySize+4+len(r.Epochs)*(4+KeySize))
	b = append(b, ringMagic...)
	b = append(b, ringVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Vault)))
	b = append(b, r.Vault...)
	b = append(b, r.Master[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Epochs)))
	for _, e := range r.Epochs {
		b = binary.BigEndian.AppendUint32(b, e.Epoch)
		b = append(b, e.Key[:]...)
	}
	return b, nil
}

func (r *Keyring) validate() error {
	switch {
	case r.Vault == "" || len(r.Vault) > maxVaultName:
		return fmt.Errorf("%w: vault ID of %d bytes (1..%d)", ErrInvalid, len(r.Vault), maxVaultName)
	case r.Master == MasterKey{}:
		return fmt.Errorf("%w: all-zero master key", ErrInvalid)
	case len(r.Epochs) > MaxEpochs:
		return fmt.Errorf("%w: %d epochs, at most %d", ErrInvalid, len(r.Epochs), MaxEpochs)
	}
	for i, e := range r.Epochs {
		if e.Epoch != uint32(i+1) {
			return fmt.Errorf("%w: epoch %d at position %d, want %d (epochs run 1, 2, 3, ...)", ErrInvalid, e.Epoch, i, i+1)
		}
		if e.Key == ([KeySize]byte{}) {
			return fmt.Errorf("%w: all-zero key for epoch %d", ErrInvalid, e.Epoch)
		}
	}
	return nil
}

// ParseKeyring decodes a keyring made by MarshalBinary and checks it names vault. Any
// malformation (length, magic, version, vault, epoch numbering, zero keys, trailing
// bytes) fails with ErrInvalid naming it; b is only read.
func ParseKeyring(b []byte, vault string) (*Keyring, error) {
	const fixed = len(ringMagic) + 1 + 2
	if len(b) < fixed {
		return nil, fmt.Errorf("crypt: keyring: %w: %d bytes, truncated", ErrInvalid, len(b))
	}
	if !bytes.Equal(b[:len(ringMagic)], []byte(ringMagic)) {
		return nil, fmt.Errorf("crypt: keyring: %w: bad magic %q, want %q", ErrInvalid, b[:len(ringMagic)], ringMagic)
	}
	if v := b[len(ringMagic)]; v != ringVersion {
		return nil, fmt.Errorf("crypt: keyring: %w: unknown keyring version %d (this build reads %d)", ErrInvalid, v, ringVersion)
	}
	n := int(binary.BigEndian.Uint16(b[len(ringMagic)+1:]))
	rest := b[fixed:]
	if len(rest) < n+KeySize+4 {
		return nil, fmt.Errorf("crypt: keyring: %w: %d bytes, truncated", ErrInvalid, len(b))
	}
	r := &Keyring{Vault: string(rest[:n])}
	rest = rest[n:]
	copy(r.Master[:], rest)
	rest = rest[KeySize:]
	count := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if count > MaxEpochs {
		return nil, fmt.Errorf("crypt: keyring: %w: %d epochs, at most %d", ErrInvalid, count, MaxEpochs)
	}
	if len(rest) != int(count)*(4+KeySize) {
		return nil, fmt.Errorf("crypt: keyring: %w: %d bytes of epochs for %d epochs, want %d", ErrInvalid, len(rest), count, int(count)*(4+KeySize))
	}
	r.Epochs = make([]EpochKey, count)
	for i := range r.Epochs {
		r.Epochs[i].Epoch = binary.BigEndian.Uint32(rest)
		copy(r.Epochs[i].Key[:], rest[4:])
		rest = rest[4+KeySize:]
	}
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("crypt: keyring: %w", err)
	}
	if r.Vault != vault {
		return nil, fmt.Errorf("crypt: keyring: %w: it is vault %q's, not %q's", ErrInvalid, r.Vault, vault)
	}
	return r, nil
}
