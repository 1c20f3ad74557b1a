// Package chunk defines chunk identifiers: fixed-size, comparable keys usable as map keys.
//
// A chunk ID is HMAC-SHA-256(vault ID key, plaintext) for data and tree chunks (computed
// by the agent, see client/crypt), or SHA-256 of the content for key-less chunks such as
// snapshot reference lists. Nodes treat IDs as opaque 32-byte keys.
package chunk

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// Size is the length of an ID in bytes.
const Size = 32

// ID identifies one chunk. The zero ID is never a valid chunk ID.
type ID [Size]byte

// ErrInvalidID is returned by ParseID for malformed input.
var ErrInvalidID = errors.New("chunk: invalid id")

// String returns the full lower-case hex form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Str returns a short (8 hex digit) form for logs and errors.
func (id ID) Str() string { return hex.EncodeToString(id[:4]) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// Less orders IDs bytewise.
func (id ID) Less(o ID) bool {
	for i := range id {
		if id[i] != o[i] {
			return id[i] < o[i]
		}
	}
	return false
}

// UnmarshalBinary sets id from exactly Size bytes. Decoders that fill byte arrays (CBOR
// byte strings on the wire) call it, so an ID sent shorter or longer than Size is refused
// instead of being zero-padded or cut into another ID.
func (id *ID) UnmarshalBinary(b []byte) error {
	if len(b) != Size {
		return fmt.Errorf("%w: %d bytes, want %d", ErrInvalidID, len(b), Size)
	}
	copy(id[:], b)
	return nil
}

// MarshalText encodes the ID as hex.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes a hex ID.
func (id *ID) UnmarshalText(b []byte) error {
	p, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ParseID parses the 64-digit hex form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*Size {
		return id, fmt.Errorf("%w: %q has %d characters, want %d", ErrInvalidID, s, len(s), 2*Size)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: %q: %v", ErrInvalidID, s, err)
	}
	return id, nil
}

// FromBytes copies a 32-byte slice into an ID.
func FromBytes(b []byte) (ID, error) {
	var id ID
	if len(b) != Size {
		return id, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidID, len(b), Size)
	}
	copy(id[:], b)
	return id, nil
}
