package crypt

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
)

// ErrWrongKey: a sealed keyring is not sealed to the identity that tried to open it.
var ErrWrongKey = errors.New("crypt: not sealed to this key")

// MaxSealedKeyring bounds a sealed keyring (a keyring of MaxEpochs epochs is about
// 147 KiB, the age header a few hundred bytes).
const MaxSealedKeyring = 256 << 10

// Identity is a key holder's X25519 key pair in age's format: a host's own key (generated
// on the host, never sent anywhere), the key pair behind a passphrase wrap, or the
// platform key of the meta servers. Keyrings are sealed to its public half, the
// recipient, so anyone may seal a new keyring to a holder (a rotation needs no holder's
// secret) while only the holder opens it. String and GoString redact the private key.
type Identity struct{ x *age.X25519Identity }

// NewIdentity generates an identity from crypto/rand.
func NewIdentity() (*Identity, error) {
	x, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("crypt: new identity: %w", err)
	}
	return &Identity{x: x}, nil
}

// ParseIdentity reads an identity file as age-keygen writes it: '#' comment lines, blank
// lines and exactly one "AGE-SECRET-KEY-1..." line. Anything else fails with ErrInvalid
// (the error never repeats the key).
func ParseIdentity(b []byte) (*Identity, error) {
	var found *age.X25519Identity
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("crypt: identity: %w: more than one key (line %d)", ErrInvalid, n)
		}
		x, err := age.ParseX25519Identity(line)
		if err != nil {
			return nil, fmt.Errorf("crypt: identity: %w: line %d is not an age X25519 secret key", ErrInvalid, n)
		}
		found = x
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("crypt: identity: %w: %v", ErrInvalid, err)
	}
	if found == nil {
		return nil, fmt.Errorf("crypt: identity: %w: no AGE-SECRET-KEY-1 line", ErrInvalid)
	}
	return &Identity{x: found}, nil
}

// MarshalText returns the identity file (age-keygen's format, with the recipient in a
// comment). It holds the private key: write it with mode 0600.
func (i *Identity) MarshalText() ([]byte, error) {
	return []byte("# coffer key holder identity (age X25519)\n# public key: " + i.Recipient() + "\n" + i.x.String() + "\n"), nil
}

// Recipient returns the public half ("age1...").
func (i *Identity) Recipient() string { return i.x.Recipient().String() }

// String redacts the private key.
func (i *Identity) String() string { return "crypt.Identity(" + i.Recipient() + ")" }

// GoString redacts the private key.
func (i *Identity) GoString() string { return i.String() }

// ValidateRecipient checks that s is an age X25519 recipient ("age1...").
func ValidateRecipient(s string) error {
	if _, err := age.ParseX25519Recipient(s); err != nil {
		return fmt.Errorf("crypt: recipient %.80q: %w: not an age X25519 recipient", s, ErrInvalid)
	}
	return nil
}

// SealTo encrypts plain to recipient with age (X25519): what SealKeyring does for a
// keyring, for other secrets sent to a holder (an escrow bundle).
func SealTo(recipient string, plain []byte) ([]byte, error) {
	rc, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		return nil, fmt.Errorf("crypt: seal: %w: recipient is not an age X25519 recipient", ErrInvalid)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, rc)
	if err != nil {
		return nil, fmt.Errorf("crypt: seal: %w", err)
	}
	if _, err := w.Write(plain); err != nil {
		return nil, fmt.Errorf("crypt: seal: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("crypt: seal: %w", err)
	}
	return buf.Bytes(), nil
}

// OpenSealedMax is OpenSealed with another bound on the message: at most max bytes
// sealed, and as much in the clear.
func OpenSealedMax(sealed []byte, id *Identity, max int) ([]byte, error) {
	if len(sealed) > max {
		return nil, fmt.Errorf("crypt: open: %w: %d bytes, at most %d", ErrInvalid, len(sealed), max)
	}
	r, err := age.Decrypt(bytes.NewReader(sealed), id.x)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, fmt.Errorf("crypt: open: %w (%s)", ErrWrongKey, id.Recipient())
		}
		return nil, fmt.Errorf("crypt: open: %w: %v", ErrInvalid, err)
	}
	plain, err := io.ReadAll(io.LimitReader(r, int64(max)))
	if err != nil {
		return nil, fmt.Errorf("crypt: open: %w: damaged: %v", ErrInvalid, err)
	}
	return plain, nil
}

// SealKeyring encrypts r to recipient with age (X25519). Only the holder of the
// recipient's identity opens it.
func SealKeyring(r *Keyring, recipient string) ([]byte, error) {
	rc, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		return nil, fmt.Errorf("crypt: seal keyring: %w: recipient is not an age X25519 recipient", ErrInvalid)
	}
	plain, err := r.MarshalBinary()
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, rc)
	if err != nil {
		return nil, fmt.Errorf("crypt: seal keyring: %w", err)
	}
	if _, err := w.Write(plain); err != nil {
		return nil, fmt.Errorf("crypt: seal keyring: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("crypt: seal keyring: %w", err)
	}
	return buf.Bytes(), nil
}

// OpenKeyring decrypts a keyring sealed to id and checks that it is vault's. Sealed to
// another key: ErrWrongKey; malformed, damaged or another vault's: ErrInvalid. sealed
// is only read.
func OpenKeyring(sealed []byte, vault string, id *Identity) (*Keyring, error) {
	plain, err := OpenSealed(sealed, id)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	return ParseKeyring(plain, vault)
}

// OpenSealed decrypts an age message of at most MaxSealedKeyring bytes sealed to id, as
// SealKeyring makes, without parsing what it holds. Errors as OpenKeyring's.
func OpenSealed(sealed []byte, id *Identity) ([]byte, error) {
	if len(sealed) > MaxSealedKeyring {
		return nil, fmt.Errorf("crypt: open keyring: %w: %d bytes, at most %d", ErrInvalid, len(sealed), MaxSealedKeyring)
	}
	r, err := age.Decrypt(bytes.NewReader(sealed), id.x)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, fmt.Errorf("crypt: open keyring: %w (%s)", ErrWrongKey, id.Recipient())
		}
		return nil, fmt.Errorf("crypt: open keyring: %w: %v", ErrInvalid, err)
	}
	plain, err := io.ReadAll(io.LimitReader(r, MaxSealedKeyring))
	if err != nil {
		return nil, fmt.Errorf("crypt: open keyring: %w: damaged: %v", ErrInvalid, err)
	}
	return plain, nil
}

// Passphrase identity layout (FORMAT.md, "Passphrase identity"): the holder key HK
// wrapped under the passphrase exactly as WrapKey wraps a master key, then the identity
// text sealed under HK.
const (
	pidMagic   = "CFKI"
	pidVersion = 1
	pidOffWrap = len(pidMagic) + 1
	pidOffNon  = pidOffWrap + wrapSize
	pidOffCT   = pidOffNon + nonceSize
	// maxIdentityText bounds the sealed identity text (an age X25519 secret key is 74
	// characters).
	maxIdentityText = 256
)

// SealIdentity protects id under passphrase: a random holder key HK is wrapped with
// Argon2id (as WrapKey, cost p) and seals the identity. It returns the blob and HK (which
// a local key cache may keep so that the next unlock skips Argon2id; OpenIdentityKey).
// Salt, nonces and HK come from rand.
func SealIdentity(id *Identity, passphrase []byte, p Argon2Params, rand io.Reader) ([]byte, MasterKey, error) {
	hk, err := NewMasterKey(rand)
	if err != nil {
		return nil, MasterKey{}, fmt.Errorf("crypt: seal identity: %w", err)
	}
	wrapped, err := WrapKey(hk, passphrase, p, rand)
	if err != nil {
		return nil, MasterKey{}, fmt.Errorf("crypt: seal identity: %w", err)
	}
	b := make([]byte, pidOffCT, pidOffCT+80+tagSize)
	copy(b, pidMagic)
	b[len(pidMagic)] = pidVersion
	copy(b[pidOffWrap:], wrapped)
	if _, err := io.ReadFull(rand, b[pidOffNon:pidOffCT]); err != nil {
		return nil, MasterKey{}, fmt.Errorf("crypt: seal identity: nonce: %w", err)
	}
	aead, err := holderAEAD(hk)
	if err != nil {
		return nil, MasterKey{}, fmt.Errorf("crypt: seal identity: %w", err)
	}
	return aead.Seal(b, b[pidOffNon:pidOffCT], []byte(id.x.String()), b[:pidOffCT]), hk, nil
}

// OpenIdentity recovers the identity of a blob made by SealIdentity, and its holder key.
// Malformed blob: ErrInvalid (before any key derivation); wrong passphrase:
// ErrWrongPassphrase.
func OpenIdentity(blob, passphrase []byte) (*Identity, MasterKey, error) {
	if err := checkIdentityBlob(blob); err != nil {
		return nil, MasterKey{}, err
	}
	hk, err := UnwrapKey(blob[pidOffWrap:pidOffNon], passphrase)
	if err != nil {
		return nil, MasterKey{}, fmt.Errorf("crypt: open identity: %w", err)
	}
	id, err := OpenIdentityKey(blob, hk)
	if err != nil {
		return nil, MasterKey{}, err
	}
	return id, hk, nil
}

// OpenIdentityKey recovers the identity of a blob made by SealIdentity with its holder
// key hk (from a local key cache). Malformed: ErrInvalid; another key or damaged
// ciphertext: ErrWrongPassphrase.
func OpenIdentityKey(blob []byte, hk MasterKey) (*Identity, error) {
	if err := checkIdentityBlob(blob); err != nil {
		return nil, err
	}
	aead, err := holderAEAD(hk)
	if err != nil {
		return nil, fmt.Errorf("crypt: open identity: %w", err)
	}
	text, err := aead.Open(nil, blob[pidOffNon:pidOffCT], blob[pidOffCT:], blob[:pidOffCT])
	if err != nil {
		return nil, fmt.Errorf("crypt: open identity: %w", ErrWrongPassphrase)
	}
	defer clear(text)
	x, err := age.ParseX25519Identity(string(text))
	if err != nil {
		return nil, fmt.Errorf("crypt: open identity: %w: the sealed identity is not an age X25519 key", ErrInvalid)
	}
	return &Identity{x: x}, nil
}

func checkIdentityBlob(blob []byte) error {
	if len(blob) < pidOffCT+tagSize || len(blob) > pidOffCT+maxIdentityText+tagSize {
		return fmt.Errorf("crypt: open identity: %w: %d bytes, want %d..%d", ErrInvalid, len(blob), pidOffCT+tagSize, pidOffCT+maxIdentityText+tagSize)
	}
	if !bytes.Equal(blob[:len(pidMagic)], []byte(pidMagic)) {
		return fmt.Errorf("crypt: open identity: %w: bad magic %q, want %q", ErrInvalid, blob[:len(pidMagic)], pidMagic)
	}
	if v := blob[len(pidMagic)]; v != pidVersion {
		return fmt.Errorf("crypt: open identity: %w: unknown version %d (this build reads %d)", ErrInvalid, v, pidVersion)
	}
	return nil
}

func holderAEAD(hk MasterKey) (cipher.AEAD, error) {
	var key [KeySize]byte
	derive(hk[:], infoHolder, key[:])
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// infoHolder derives the AES key that seals a passphrase identity from its holder key.
const infoHolder = "coffer holder v1"
