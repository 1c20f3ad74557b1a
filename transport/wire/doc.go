// Package wire frames Coffer RPC requests and responses on a byte stream and encodes their
// messages as deterministic CBOR.
//
// One RPC is one stream: the caller writes a request frame and closes its send side, the
// server answers with one response frame. The byte layout is specified in FORMAT.md beside
// this file; any change to it bumps the version byte.
//
// Errors from malformed input (bad magic, unknown version or kind, oversize or truncated
// frames, invalid method names) wrap ErrFrame. Errors from the underlying reader or writer
// are wrapped as they come and do not match ErrFrame.
package wire
