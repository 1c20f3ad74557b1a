// Package kms lets an agent keep a vault's key under an external key management service
// (issue 17 step 5). A KMS wrap of a vault (meta.WrapKMS) is an age X25519 identity whose
// private key the KMS encrypted; the vault's keyring is sealed to the identity's public
// half. Opening the vault asks the KMS to decrypt the identity: the KMS never sees the
// keyring and the cluster never sees the identity in the clear.
//
// Two kinds of Client exist: Plugin, an executable that answers one JSON request on stdin
// with one JSON response on stdout (the way git credential helpers work; the protocol is
// in docs/security.md, "KMS plugin protocol"), and Transit, a built-in client of
// HashiCorp Vault's Transit secrets engine. Resolver picks one by the plugin name a wrap
// records.
package kms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Errors of a KMS operation. An *Error wraps one of them (errors.Is).
var (
	// ErrKeyDisabled: the KMS refuses to use the key (disabled, scheduled for deletion,
	// or the version is below the key's minimum decryption version). Re-enabling the key
	// in the KMS makes the same wrap work again. (immutable)
	ErrKeyDisabled = errors.New("kms: key disabled")
	// ErrKeyNotFound: no such key (or key version) in the KMS. (immutable)
	ErrKeyNotFound = errors.New("kms: key not found")
	// ErrDenied: the KMS refused the caller's credentials for this key. (immutable)
	ErrDenied = errors.New("kms: permission denied")
	// ErrInvalid: a malformed request or response (plugin output included), or a
	// ciphertext the key does not open. (immutable)
	ErrInvalid = errors.New("kms: invalid")
	// ErrUnavailable: the KMS or the plugin could not be reached or failed; retrying
	// later may work. (immutable)
	ErrUnavailable = errors.New("kms: unavailable")
	// ErrUnsupported: the plugin does not implement the operation (rotate). (immutable)
	ErrUnsupported = errors.New("kms: operation not supported")
)

// Error codes of the plugin protocol, one per sentinel error.
const (
	CodeKeyDisabled = "key_disabled"
	CodeKeyNotFound = "key_not_found"
	CodeDenied      = "denied"
	CodeInvalid     = "invalid"
	CodeUnavailable = "unavailable"
	CodeUnsupported = "unsupported"
)

// codeErr maps a protocol error code to its sentinel error.
func codeErr(code string) (error, bool) {
	switch code {
	case CodeKeyDisabled:
		return ErrKeyDisabled, true
	case CodeKeyNotFound:
		return ErrKeyNotFound, true
	case CodeDenied:
		return ErrDenied, true
	case CodeInvalid:
		return ErrInvalid, true
	case CodeUnavailable:
		return ErrUnavailable, true
	case CodeUnsupported:
		return ErrUnsupported, true
	}
	return nil, false
}

// Error is a KMS failure naming the key (and version) it concerns.
type Error struct {
	Op         string // wrap, unwrap, rotate
	KeyID      string
	KeyVersion string // "" when unknown
	Kind       error  // one of the sentinel errors
	Message    string // the KMS's or plugin's explanation
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kms: %s with key %q", e.Op, e.KeyID)
	if e.KeyVersion != "" {
		fmt.Fprintf(&b, " version %s", e.KeyVersion)
	}
	b.WriteString(": ")
	b.WriteString(strings.TrimPrefix(e.Kind.Error(), "kms: "))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Unwrap returns the sentinel error.
func (e *Error) Unwrap() error { return e.Kind }

// Wrapped is a plaintext encrypted by a KMS key: the key, the version that encrypted it
// and the KMS's ciphertext (opaque to Coffer).
type Wrapped struct {
	KeyID      string
	KeyVersion string
	Ciphertext []byte
}

// Client is one KMS. Every method names the vault whose key is concerned (sent to the KMS
// as context: a plugin may bind it to the ciphertext and log it).
type Client interface {
	// Wrap encrypts plaintext (at most MaxPlaintext bytes) under the key's current
	// version.
	Wrap(ctx context.Context, vault, keyID string, plaintext []byte) (Wrapped, error)
	// Unwrap decrypts what Wrap returned.
	Unwrap(ctx context.Context, vault string, w Wrapped) ([]byte, error)
	// Rotate makes a new current version of the key and returns it. Earlier versions
	// keep decrypting until the KMS disables them.
	Rotate(ctx context.Context, vault, keyID string) (string, error)
}

// Bounds of the protocol.
const (
	// MaxPlaintext bounds what is wrapped (an age identity is 74 bytes).
	MaxPlaintext = 1024
	// MaxCiphertext bounds a KMS's ciphertext (meta.KeyWrap.Identity holds it: 4 KiB).
	MaxCiphertext = 4096
	// MaxKeyID bounds a key ID (meta.KeyWrap.Holder holds it).
	MaxKeyID = 256
	// MaxKeyVersion bounds a key version.
	MaxKeyVersion = 128
	// MaxMessage bounds an error message kept from a plugin.
	MaxMessage = 1024
)

// ValidateKeyID checks a key ID: 1..MaxKeyID bytes of printable UTF-8 with no spaces
// (a key name, an ARN, a resource path or a URL).
func ValidateKeyID(id string) error {
	if err := printable(id, MaxKeyID); err != nil {
		return fmt.Errorf("kms: key ID %.60q: %w: %v", id, ErrInvalid, err)
	}
	return nil
}

// ValidateKeyVersion checks a key version: 1..MaxKeyVersion bytes of printable UTF-8
// with no spaces.
func ValidateKeyVersion(v string) error {
	if err := printable(v, MaxKeyVersion); err != nil {
		return fmt.Errorf("kms: key version %.60q: %w: %v", v, ErrInvalid, err)
	}
	return nil
}

func printable(s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("%d bytes, want 1..%d", len(s), max)
	}
	if !utf8.ValidString(s) {
		return errors.New("not UTF-8")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("character %U is a space or not printable", r)
		}
	}
	return nil
}

// ValidatePluginName checks a plugin name as a wrap records it: 1..64 of a-z, 0-9, '-'
// and '_', starting with a letter or digit. A name is never a path: the agent maps it to
// an executable it trusts (Resolver), so a changed key record cannot make it run
// anything else.
func ValidatePluginName(name string) error {
	ok := name != "" && len(name) <= 64 && name[0] != '-' && name[0] != '_'
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	if !ok {
		return fmt.Errorf("kms: plugin name %.60q: %w: want 1..64 of a-z, 0-9, '-', '_'", name, ErrInvalid)
	}
	return nil
}
