package crypt

import "errors"

// Sentinel errors; match them with errors.Is. Every error returned by this package wraps
// at most one of them and names what is wrong.
var (
	// ErrCorrupt: a sealed chunk failed a check: truncated or malformed header, unknown
	// version, key generation or compression, failed authentication (tampered bytes or a
	// different vault's key), bad compressed stream, or content that does not match its ID.
	ErrCorrupt = errors.New("crypt: corrupt")
	// ErrNoEpochKey: a well-formed envelope is sealed under a key epoch (data key
	// generation) the keys do not hold: the chunk was written after the holder whose
	// keyring these keys came from lost its key wrap (a revoked host), or its header is
	// damaged. It is not ErrCorrupt: the bytes may well be intact.
	ErrNoEpochKey = errors.New("crypt: no key for the chunk's key epoch")
	// ErrWrongPassphrase: a well-formed key wrapping did not open with the passphrase.
	// A garbled ciphertext or tag inside an otherwise well-formed wrapping cannot be told
	// apart from a wrong passphrase and reports this error too.
	ErrWrongPassphrase = errors.New("crypt: wrong passphrase")
	// ErrInvalid: a bad argument (empty passphrase, out-of-range parameters, oversize
	// plaintext, overlapping buffers) or a key wrapping that is truncated or malformed.
	ErrInvalid = errors.New("crypt: invalid argument")
	// ErrStale: a key cache entry stands for a key wrapping the vault no longer holds.
	ErrStale = errors.New("crypt: stale key cache entry")
)
