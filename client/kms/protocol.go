package kms

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Protocol is the version of the plugin protocol this package speaks.
const Protocol = 1

// Operations of the plugin protocol.
const (
	OpWrap   = "wrap"
	OpUnwrap = "unwrap"
	OpRotate = "rotate"
)

// MaxMessageSize bounds one request or response document (a plugin writing more is
// refused, not read to the end).
const MaxMessageSize = 64 << 10

// Request is one plugin request, written as one JSON object on the plugin's stdin
// (followed by a newline, then end of file).
type Request struct {
	Protocol int    `json:"protocol"`
	Op       string `json:"op"`
	KeyID    string `json:"key_id"`
	// KeyVersion: unwrap only, the version Wrap returned.
	KeyVersion string `json:"key_version,omitempty"`
	// Plaintext: wrap only (standard base64).
	Plaintext []byte `json:"plaintext,omitempty"`
	// Ciphertext: unwrap only (standard base64), as Wrap returned it.
	Ciphertext []byte `json:"ciphertext,omitempty"`
	// Context names what the key protects: "vault" (the vault ID). Wrap and unwrap get
	// the same context; a plugin may bind it to the ciphertext (additional authenticated
	// data) and should log it.
	Context map[string]string `json:"context,omitempty"`
}

// Response is the plugin's answer, one JSON object on its stdout. Exactly one of Error
// and the op's result fields is set.
type Response struct {
	Protocol int `json:"protocol"`
	// KeyID and KeyVersion: wrap (the version that encrypted) and rotate (the new
	// current version).
	KeyID      string `json:"key_id,omitempty"`
	KeyVersion string `json:"key_version,omitempty"`
	// Ciphertext: wrap.
	Ciphertext []byte `json:"ciphertext,omitempty"`
	// Plaintext: unwrap.
	Plaintext []byte         `json:"plaintext,omitempty"`
	Error     *ResponseError `json:"error,omitempty"`
}

// ResponseError is a refusal: a code (CodeKeyDisabled, ...) and a message for people.
type ResponseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// decodeOne decodes exactly one JSON object of at most MaxMessageSize bytes into v:
// nothing but white space may follow it.
func decodeOne(b []byte, v any) error {
	if len(b) > MaxMessageSize {
		return fmt.Errorf("%d bytes, at most %d", len(b), MaxMessageSize)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errors.New("more than one JSON value")
	}
	return nil
}

// DecodeRequest decodes and checks a request (what a plugin written in Go reads). Errors
// wrap ErrInvalid.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if err := decodeOne(b, &r); err != nil {
		return Request{}, fmt.Errorf("kms: request: %w: %v", ErrInvalid, err)
	}
	if err := r.check(); err != nil {
		return Request{}, fmt.Errorf("kms: request: %w", err)
	}
	return r, nil
}

func (r Request) check() error {
	if r.Protocol != Protocol {
		return fmt.Errorf("%w: protocol %d (this build speaks %d)", ErrInvalid, r.Protocol, Protocol)
	}
	if err := ValidateKeyID(r.KeyID); err != nil {
		return err
	}
	switch r.Op {
	case OpWrap:
		if len(r.Plaintext) == 0 || len(r.Plaintext) > MaxPlaintext {
			return fmt.Errorf("%w: wrap of %d bytes (1..%d)", ErrInvalid, len(r.Plaintext), MaxPlaintext)
		}
	case OpUnwrap:
		if err := ValidateKeyVersion(r.KeyVersion); err != nil {
			return err
		}
		if len(r.Ciphertext) == 0 || len(r.Ciphertext) > MaxCiphertext {
			return fmt.Errorf("%w: ciphertext of %d bytes (1..%d)", ErrInvalid, len(r.Ciphertext), MaxCiphertext)
		}
	case OpRotate:
	default:
		return fmt.Errorf("%w: unknown op %.40q", ErrInvalid, r.Op)
	}
	return nil
}

// DecodeResponse decodes a plugin's answer to req and checks it: one JSON object of at
// most MaxMessageSize bytes, protocol 1, either an error with a known code or exactly the
// result fields req.Op asks for (a wrap names req's key; a rotate too). A refusal is
// returned as an *Error; anything malformed wraps ErrInvalid and says what is wrong.
func DecodeResponse(req Request, b []byte) (Response, error) {
	var r Response
	if err := decodeOne(b, &r); err != nil {
		return Response{}, fmt.Errorf("kms: plugin response to %s: %w: %v", req.Op, ErrInvalid, err)
	}
	bad := func(format string, args ...any) (Response, error) {
		return Response{}, fmt.Errorf("kms: plugin response to %s: %w: %s", req.Op, ErrInvalid, fmt.Sprintf(format, args...))
	}
	if r.Protocol != Protocol {
		return bad("protocol %d (this build speaks %d)", r.Protocol, Protocol)
	}
	if r.Error != nil {
		kind, ok := codeErr(r.Error.Code)
		if !ok {
			return bad("unknown error code %.40q", r.Error.Code)
		}
		if r.KeyID != "" || r.KeyVersion != "" || r.Ciphertext != nil || r.Plaintext != nil {
			return bad("an error with result fields")
		}
		msg := r.Error.Message
		if len(msg) > MaxMessage {
			msg = msg[:MaxMessage] + "..."
		}
		return r, &Error{Op: req.Op, KeyID: req.KeyID, KeyVersion: req.KeyVersion, Kind: kind, Message: sanitize(msg)}
	}
	switch req.Op {
	case OpWrap:
		if r.KeyID != req.KeyID {
			return bad("key_id %.60q, the request named %q", r.KeyID, req.KeyID)
		}
		if err := ValidateKeyVersion(r.KeyVersion); err != nil {
			return bad("%v", err)
		}
		if len(r.Ciphertext) == 0 || len(r.Ciphertext) > MaxCiphertext {
			return bad("ciphertext of %d bytes (1..%d)", len(r.Ciphertext), MaxCiphertext)
		}
		if r.Plaintext != nil {
			return bad("a wrap response carries a plaintext")
		}
	case OpUnwrap:
		if len(r.Plaintext) == 0 || len(r.Plaintext) > MaxPlaintext {
			return bad("plaintext of %d bytes (1..%d)", len(r.Plaintext), MaxPlaintext)
		}
		if r.Ciphertext != nil || r.KeyID != "" || r.KeyVersion != "" {
			return bad("an unwrap response carries more than the plaintext")
		}
	case OpRotate:
		if r.KeyID != req.KeyID {
			return bad("key_id %.60q, the request named %q", r.KeyID, req.KeyID)
		}
		if err := ValidateKeyVersion(r.KeyVersion); err != nil {
			return bad("%v", err)
		}
		if r.Ciphertext != nil || r.Plaintext != nil {
			return bad("a rotate response carries key material")
		}
	default:
		return bad("unknown op")
	}
	return r, nil
}

// sanitize replaces control characters in a plugin's message, so that it cannot move a
// terminal's cursor or forge log lines.
func sanitize(s string) string {
	b := []rune(s)
	for i, r := range b {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			b[i] = '?'
		}
	}
	return string(b)
}

// EncodeResponse encodes a plugin's answer (what a plugin written in Go writes).
func EncodeResponse(r Response) []byte {
	r.Protocol = Protocol
	b, err := json.Marshal(r)
	if err != nil {
		// A Response holds strings, byte slices and a map of strings only.
		panic(fmt.Sprintf("kms: encode response: %v", err))
	}
	return append(b, '\n')
}

// ErrorResponse returns the response refusing a request with err: its code when err
// wraps a sentinel error, CodeInvalid otherwise.
func ErrorResponse(err error) Response {
	code, msg := CodeInvalid, err.Error()
	for c, e := range map[string]error{CodeKeyDisabled: ErrKeyDisabled, CodeKeyNotFound: ErrKeyNotFound, CodeDenied: ErrDenied,
		CodeUnavailable: ErrUnavailable, CodeUnsupported: ErrUnsupported, CodeInvalid: ErrInvalid} {
		if errors.Is(err, e) {
			code, msg = c, strings.TrimPrefix(msg, e.Error()+": ")
		}
	}
	return Response{Protocol: Protocol, Error: &ResponseError{Code: code, Message: msg}}
}
