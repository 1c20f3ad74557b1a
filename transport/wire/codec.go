package wire

import (
	"bytes"
	"context"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/cofferhq/coffer/transport"
)

// NB: the modes are immutable after construction and safe for concurrent use; building them
// once at package initialisation is not mutable state.
var (
	encMode = mustEncMode()
	decMode = mustDecMode()
)

// MaxArrayElements bounds CBOR arrays in decoded messages (e.g. IDs in one batch).
const MaxArrayElements = 1 << 20

func mustEncMode() cbor.UserBufferEncMode {
	opts := cbor.CoreDetEncOptions()
	opts.Time = cbor.TimeRFC3339Nano
	em, err := opts.UserBufferEncMode()
	if err != nil {
		panic("wire: cbor enc mode: " + err.Error())
	}
	return em
}

func mustDecMode() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxArrayElements: MaxArrayElements,
	}.DecMode()
	if err != nil {
		panic("wire: cbor dec mode: " + err.Error())
	}
	return dm
}

// Marshal encodes v as Core Deterministic CBOR (RFC 8949 §4.2.1): the same value always
// yields the same bytes. time.Time values are encoded as RFC 3339 text with nanoseconds.
// Byte arrays such as chunk.ID are encoded as byte strings. An Encoded value is returned
// as it is (the result aliases it).
func Marshal(v any) ([]byte, error) {
	if e, ok := v.(Encoded); ok {
		return e, nil
	}
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("wire: marshal %T: %w", v, err)
	}
	return b, nil
}

// Encoded is a message that MarshalSized has already encoded. Marshal returns it, and so
// Call sends it, unchanged: a caller that may send one request several times (retries on
// other nodes) encodes it once.
type Encoded []byte

// MarshalSized is Marshal into a buffer of sizeHint bytes allocated up front (at most
// MaxBodyLen), for large messages whose size the caller can bound: the encoding is the
// same bytes Marshal gives, but it is written once instead of being copied each time a
// growing buffer doubles, and then again into the result. A hint that is too small
// costs the growth it would have saved; one that is too large wastes the difference.
func MarshalSized(v any, sizeHint int) (Encoded, error) {
	buf := bytes.NewBuffer(make([]byte, 0, min(max(sizeHint, 0), MaxBodyLen)))
	if err := encMode.MarshalToBuffer(v, buf); err != nil {
		return nil, fmt.Errorf("wire: marshal %T: %w", v, err)
	}
	return buf.Bytes(), nil
}

// Unmarshal decodes CBOR into v (a pointer). It rejects trailing bytes, duplicate map keys,
// indefinite lengths and invalid UTF-8. The decoded value does not alias b, except in
// its Bytes fields, which are slices of b.
func Unmarshal(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("wire: unmarshal %T: %w", v, err)
	}
	return nil
}

// Call marshals req (an Encoded req is sent as it is), calls method on addr through c and, when resp is not nil, decodes the
// reply into it. Remote and transport errors are returned as c returned them (a
// *transport.Error, or an error matching transport.ErrUnreachable); an undecodable reply is
// an Internal *transport.Error naming the method.
func Call(ctx context.Context, c transport.Caller, addr, method string, req, resp any) error {
	body, err := Marshal(req)
	if err != nil {
		return fmt.Errorf("wire: call %s: %w", method, err)
	}
	out, err := c.Call(ctx, addr, method, body)
	if err != nil {
		return err
	}
	if resp == nil {
		return nil
	}
	if err := Unmarshal(out, resp); err != nil {
		return &transport.Error{Code: transport.Internal, Msg: fmt.Sprintf("wire: call %s on %s: bad reply: %v", method, addr, err)}
	}
	return nil
}
