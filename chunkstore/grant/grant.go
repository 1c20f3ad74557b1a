// Package grant is the restore grant (FORMAT.md): a token the meta leader signs for one
// principal to read one snapshot of one vault, its verification, and the check of a read
// against it (holder, vault scope, covered chunks). It imports nothing of Coffer's but
// the chunk ID leaf, so the meta service that issues grants and the chunk nodes that
// honour them share it without importing each other.
package grant

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// MaxTTL is the longest a restore grant lives.
const MaxTTL = time.Hour

// MaxPrincipalLen bounds the principal name a restore grant names.
const MaxPrincipalLen = 1024

// MaxVaultLen bounds a vault name (meta.MaxVaultIDLen is this).
const MaxVaultLen = 128

var (
	// ErrBad marks a restore grant that is malformed, forged, expired or of a version no
	// longer honoured.
	ErrBad = errors.New("grant: invalid restore grant")
	// ErrInvalid marks a grant Sign refuses to sign.
	ErrInvalid = errors.New("grant: invalid grant")
	// ErrDenied marks a read a valid grant does not allow: another holder, a vault
	// outside the certificate's scope, or a chunk the snapshot does not reference.
	ErrDenied = errors.New("grant: denied")
)

// Grant is a restore grant: read-only access to the chunks of one snapshot of one vault,
// for one principal, until Expires. The meta leader signs it with the cluster's grant
// key. Chunk nodes verify it, honour it only for a certificate whose principal is
// Principal and whose vault scope holds Vault, and serve only chunks listed in the
// snapshot's reference lists (Refs): a grant cannot be lent, cannot read another vault,
// write or delete.
type Grant struct {
	Vault     string     `json:"vault"`     // a vault name (meta.VaultID)
	Snapshot  chunk.ID   `json:"snapshot"`  // a snapshot ID (meta.SnapshotID)
	Refs      []chunk.ID `json:"refs"`      // the snapshot's reference-list chunks
	Principal string     `json:"principal"` // the certificate common name it was issued to
	Expires   time.Time  `json:"expires"`
}

// Restore grant token layout (see FORMAT.md): version, tag, payload.
const (
	// grantVersion is the token version Sign writes and Verify accepts.
	// Version 1 (JSON payload) named its principal but nothing checked it; its tokens
	// are refused.
	grantVersion   = 2
	grantHeaderLen = 1 + sha256.Size
	// grantPayloadFixed is the payload without its variable parts: expiry, snapshot,
	// the two name lengths and the reference count.
	grantPayloadFixed = 8 + chunk.Size + 2 + 2 + 4
)

// Key derives the grant signing key from the cluster secret.
func Key(clusterSecret []byte) []byte {
	m := hmac.New(sha256.New, clusterSecret)
	m.Write([]byte("coffer restore grant key v1"))
	return m.Sum(nil)
}

// CheckVaultName checks that name is a usable vault name: 1..MaxVaultLen characters
// from A-Z a-z 0-9 . _ -, not starting with '.'. The error says what is wrong and wraps no
// sentinel: meta.ValidateVaultID and Sign add their own.
func CheckVaultName(name string) error {
	if name == "" {
		return errors.New("empty vault ID")
	}
	if len(name) > MaxVaultLen {
		return fmt.Errorf("vault ID has %d characters, at most %d allowed", len(name), MaxVaultLen)
	}
	if name[0] == '.' {
		return fmt.Errorf("vault ID %q starts with '.'", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("vault ID %q: character %q at %d not allowed (use A-Z a-z 0-9 . _ -)", name, c, i)
		}
	}
	return nil
}

// validateGrant checks the fields Sign encodes; errors wrap ErrInvalid.
func validateGrant(g Grant) error {
	if err := CheckVaultName(g.Vault); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if g.Snapshot.IsZero() {
		return fmt.Errorf("%w: zero snapshot ID", ErrInvalid)
	}
	if g.Principal == "" || len(g.Principal) > MaxPrincipalLen {
		return fmt.Errorf("%w: principal of %d bytes, want 1..%d", ErrInvalid, len(g.Principal), MaxPrincipalLen)
	}
	if len(g.Refs) == 0 {
		return fmt.Errorf("%w: snapshot %s: no reference-list chunks", ErrInvalid, g.Snapshot.Str())
	}
	if ns := g.Expires.UnixNano(); !time.Unix(0, ns).Equal(g.Expires) {
		return fmt.Errorf("%w: expiry %s outside the years 1678..2262", ErrInvalid, g.Expires.Format(time.RFC3339))
	}
	return nil
}

// encodeGrantPayload lays out a validated grant's fields (FORMAT.md).
func encodeGrantPayload(g Grant) []byte {
	b := make([]byte, 0, grantPayloadFixed+len(g.Vault)+len(g.Principal)+len(g.Refs)*chunk.Size)
	b = binary.BigEndian.AppendUint64(b, uint64(g.Expires.UnixNano()))
	b = append(b, g.Snapshot[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(g.Vault)))
	b = append(b, g.Vault...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(g.Principal)))
	b = append(b, g.Principal...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(g.Refs)))
	for _, r := range g.Refs {
		b = append(b, r[:]...)
	}
	return b
}

// decodeGrantPayload parses a payload laid out by encodeGrantPayload, refusing short or
// trailing bytes and fields Sign would not sign. It allocates no more than
// len(p). Errors wrap ErrBad.
func decodeGrantPayload(p []byte) (Grant, error) {
	var g Grant
	bad := func(what string, args ...any) (Grant, error) {
		return Grant{}, fmt.Errorf("%w: payload: %s", ErrBad, fmt.Sprintf(what, args...))
	}
	if len(p) < grantPayloadFixed {
		return bad("%d bytes, shorter than the %d fixed bytes", len(p), grantPayloadFixed)
	}
	g.Expires = time.Unix(0, int64(binary.BigEndian.Uint64(p))).UTC()
	p = p[8:]
	copy(g.Snapshot[:], p)
	p = p[chunk.Size:]
	str := func() (string, bool) {
		if len(p) < 2 {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(p))
		if len(p) < 2+n {
			return "", false
		}
		s := string(p[2 : 2+n])
		p = p[2+n:]
		return s, true
	}
	vault, ok := str()
	if !ok {
		return bad("vault name runs past the end")
	}
	g.Vault = vault
	if g.Principal, ok = str(); !ok {
		return bad("principal name runs past the end")
	}
	if len(p) < 4 {
		return bad("reference count runs past the end")
	}
	n := binary.BigEndian.Uint32(p)
	p = p[4:]
	if uint64(len(p)) != uint64(n)*chunk.Size {
		return bad("%d reference-list IDs need %d bytes, have %d", n, uint64(n)*chunk.Size, len(p))
	}
	g.Refs = make([]chunk.ID, n)
	for i := range g.Refs {
		copy(g.Refs[i][:], p[i*chunk.Size:])
	}
	if err := validateGrant(g); err != nil {
		return bad("%v", err)
	}
	return g, nil
}

// grantTag is the token's HMAC-SHA-256 over its version byte and payload.
func grantTag(key []byte, version byte, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte{version})
	m.Write(payload)
	return m.Sum(nil)
}

// Sign encodes g as a token (FORMAT.md): a version byte, an HMAC-SHA-256 tag over
// the version and payload, and the payload. A grant with an invalid vault, a zero
// snapshot, no principal (or one over MaxPrincipalLen bytes), no references, or an
// expiry outside the years 1678..2262 is refused with an error wrapping ErrInvalid.
func Sign(key []byte, g Grant) ([]byte, error) {
	if err := validateGrant(g); err != nil {
		return nil, fmt.Errorf("grant: sign: %w", err)
	}
	payload := encodeGrantPayload(g)
	out := make([]byte, 0, grantHeaderLen+len(payload))
	out = append(out, grantVersion)
	out = append(out, grantTag(key, grantVersion, payload)...)
	return append(out, payload...), nil
}

// Verify checks a token's version, tag and expiry at now and returns the grant, or
// an error wrapping ErrBad that says what is wrong. It does not check who presents
// the token: CheckHolder compares Principal and Vault with the presenting certificate.
func Verify(key, token []byte, now time.Time) (Grant, error) {
	if len(token) == 0 {
		return Grant{}, fmt.Errorf("%w: empty token", ErrBad)
	}
	switch v := token[0]; {
	case v == 1:
		return Grant{}, fmt.Errorf("%w: a version 1 grant is not bound to its holder and no longer honoured; obtain a new grant", ErrBad)
	case v != grantVersion:
		return Grant{}, fmt.Errorf("%w: unknown version %d (want %d)", ErrBad, v, grantVersion)
	}
	if len(token) < grantHeaderLen {
		return Grant{}, fmt.Errorf("%w: token of %d bytes, shorter than its %d-byte header", ErrBad, len(token), grantHeaderLen)
	}
	tag, payload := token[1:grantHeaderLen], token[grantHeaderLen:]
	if !hmac.Equal(tag, grantTag(key, token[0], payload)) {
		return Grant{}, fmt.Errorf("%w: signature does not verify", ErrBad)
	}
	g, err := decodeGrantPayload(payload)
	if err != nil {
		return Grant{}, err
	}
	if !now.Before(g.Expires) {
		return Grant{}, fmt.Errorf("%w: grant for snapshot %s expired at %s", ErrBad, g.Snapshot.Str(), g.Expires.Format(time.RFC3339))
	}
	return g, nil
}

// CheckHolder checks that the certificate presenting g is the one it was issued to
// (principal) and that g's vault is in that certificate's vault scope (empty = all).
// Refusals wrap ErrDenied and name the binding that failed.
func (g Grant) CheckHolder(principal string, vaultScope []string) error {
	if g.Principal != principal {
		return fmt.Errorf("%w: the restore grant for snapshot %s was issued to %q, not to this certificate's principal", ErrDenied, g.Snapshot.Str(), g.Principal)
	}
	if len(vaultScope) > 0 && !slices.Contains(vaultScope, g.Vault) {
		return fmt.Errorf("%w: the restore grant names vault %q, outside the certificate's vault scope %q", ErrDenied, g.Vault, vaultScope)
	}
	return nil
}

// CheckCovers checks that every id is one of g's reference-list chunks or listed in
// lists, the decoded reference lists g.Refs name (each sorted, as reflist.Decode returns
// them). The refusal wraps ErrDenied and names the first chunk not covered.
func (g Grant) CheckCovers(lists [][]chunk.ID, ids []chunk.ID) error {
	for _, id := range ids {
		if !g.covers(lists, id) {
			return fmt.Errorf("%w: grant for snapshot %s of vault %s does not cover chunk %s", ErrDenied, g.Snapshot.Str(), g.Vault, id.Str())
		}
	}
	return nil
}

// covers reports whether id is one of g's reference-list chunks or listed in lists.
func (g Grant) covers(lists [][]chunk.ID, id chunk.ID) bool {
	if slices.Contains(g.Refs, id) {
		return true
	}
	for _, l := range lists {
		if _, ok := slices.BinarySearchFunc(l, id, func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) }); ok {
			return true
		}
	}
	return false
}
