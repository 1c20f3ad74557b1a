package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cofferhq/coffer/transport"
)

// Frame constants; see FORMAT.md.
const (
	// Version is the frame version this package writes and the only one it reads.
	Version = 1
	// MaxMethodLen bounds a method name in bytes.
	MaxMethodLen = 128
	// MaxMessageLen bounds an error message in a response. WriteResponse truncates longer
	// messages; ReadResponse rejects them.
	MaxMessageLen = 4096
	// MaxBodyLen bounds a frame body: a 64 MiB batch plus 1 MiB of envelope.
	MaxBodyLen = 64<<20 + 1<<20

	// FirstBodyBuffer is the most body a reader allocates before any of it has arrived; a
	// larger body is read into buffers that grow with the bytes received (see readBody), so
	// a lying length field costs at most this plus BodyGrowFactor times what was sent.
	FirstBodyBuffer = 16 << 10
	// BodyGrowFactor bounds a body buffer to this many times the bytes received so far.
	BodyGrowFactor = 4

	kindRequest  = 1
	kindResponse = 2
)

// magic opens every frame. Immutable: only ever read.
var magic = [2]byte{'C', 'F'}

// ErrFrame marks malformed frames: truncated, garbage, oversize or of an unknown version.
var ErrFrame = errors.New("wire: malformed frame")

// WriteRequest writes one request frame. The method must be 1..MaxMethodLen printable ASCII
// bytes (0x21..0x7e) and the body at most MaxBodyLen bytes; otherwise nothing is written and
// the error wraps ErrFrame. w is written with at most two Write calls; body is not retained.
func WriteRequest(w io.Writer, method string, body []byte) error {
	if err := checkMethod(method); err != nil {
		return fmt.Errorf("wire: write request: %w", err)
	}
	if len(body) > MaxBodyLen {
		return fmt.Errorf("wire: write request %s: %w: body of %d bytes exceeds %d", method, ErrFrame, len(body), MaxBodyLen)
	}
	hdr := make([]byte, 0, 4+2+len(method)+4)
	hdr = append(hdr, magic[0], magic[1], Version, kindRequest)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(method)))
	hdr = append(hdr, method...)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(body)))
	if err := writeFrame(w, hdr, body); err != nil {
		return fmt.Errorf("wire: write request %s: %w", method, err)
	}
	return nil
}

// RequestHeader is the part of a request frame before its body: the method and the body
// length the caller announced, which no byte of the body has yet confirmed.
type RequestHeader struct {
	Method  string
	BodyLen int // 0..MaxBodyLen
}

// ReadRequest reads one request frame. The returned body is a fresh slice owned by the
// caller. Malformed or truncated input yields an error wrapping ErrFrame (and io.EOF when
// the input was empty, io.ErrUnexpectedEOF when it ended inside the frame). It is
// ReadRequestHeader followed by ReadRequestBody.
func ReadRequest(r io.Reader) (method string, body []byte, err error) {
	h, err := ReadRequestHeader(r)
	if err != nil {
		return "", nil, err
	}
	body, err = ReadRequestBody(r, h)
	if err != nil {
		return "", nil, err
	}
	return h.Method, body, nil
}

// ReadRequestHeader reads a request frame up to and including its body length, and no
// further: a server decides on the method, the caller and the announced length before it
// reads (or allocates for) any of the body. Errors are as for ReadRequest; a length above
// MaxBodyLen is ErrFrame.
func ReadRequestHeader(r io.Reader) (RequestHeader, error) {
	if err := readHeader(r, kindRequest); err != nil {
		return RequestHeader{}, fmt.Errorf("wire: read request: %w", err)
	}
	var lb [2]byte
	if err := readFull(r, lb[:]); err != nil {
		return RequestHeader{}, fmt.Errorf("wire: read request method length: %w", err)
	}
	n := int(binary.BigEndian.Uint16(lb[:]))
	if n == 0 || n > MaxMethodLen {
		return RequestHeader{}, fmt.Errorf("wire: read request: %w: method length %d not in 1..%d", ErrFrame, n, MaxMethodLen)
	}
	mb := make([]byte, n)
	if err := readFull(r, mb); err != nil {
		return RequestHeader{}, fmt.Errorf("wire: read request method: %w", err)
	}
	method := string(mb)
	if err := checkMethod(method); err != nil {
		return RequestHeader{}, fmt.Errorf("wire: read request: %w", err)
	}
	bl, err := readBodyLen(r)
	if err != nil {
		return RequestHeader{}, fmt.Errorf("wire: read request %s: %w", method, err)
	}
	return RequestHeader{Method: method, BodyLen: bl}, nil
}

// ReadRequestBody reads the body that h announced (h as ReadRequestHeader returned it).
// The buffer grows with the bytes that arrive, never ahead of them by more than
// FirstBodyBuffer or BodyGrowFactor times what arrived; the result is exactly
// h.BodyLen long and owned by the caller. A body that ends early is ErrFrame and
// io.ErrUnexpectedEOF.
func ReadRequestBody(r io.Reader, h RequestHeader) ([]byte, error) {
	if h.BodyLen < 0 || h.BodyLen > MaxBodyLen {
		return nil, fmt.Errorf("wire: read request %s: %w: body length %d not in 0..%d", h.Method, ErrFrame, h.BodyLen, MaxBodyLen)
	}
	body, err := readBody(r, h.BodyLen)
	if err != nil {
		return nil, fmt.Errorf("wire: read request %s: %w", h.Method, err)
	}
	return body, nil
}

// WriteResponse writes one response frame. A message longer than MaxMessageLen is
// truncated to it. A body above MaxBodyLen is an error wrapping ErrFrame and nothing is
// written. body is not retained.
func WriteResponse(w io.Writer, code transport.Code, msg string, body []byte) error {
	if len(body) > MaxBodyLen {
		return fmt.Errorf("wire: write response: %w: body of %d bytes exceeds %d", ErrFrame, len(body), MaxBodyLen)
	}
	if len(msg) > MaxMessageLen {
		msg = msg[:MaxMessageLen]
	}
	hdr := make([]byte, 0, 4+2+2+len(msg)+4)
	hdr = append(hdr, magic[0], magic[1], Version, kindResponse)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(code))
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(msg)))
	hdr = append(hdr, msg...)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(body)))
	if err := writeFrame(w, hdr, body); err != nil {
		return fmt.Errorf("wire: write response: %w", err)
	}
	return nil
}

// ReadResponse reads one response frame. The returned body is a fresh slice owned by the
// caller. Errors are as for ReadRequest.
func ReadResponse(r io.Reader) (code transport.Code, msg string, body []byte, err error) {
	if err := readHeader(r, kindResponse); err != nil {
		return 0, "", nil, fmt.Errorf("wire: read response: %w", err)
	}
	var cb [4]byte
	if err := readFull(r, cb[:]); err != nil {
		return 0, "", nil, fmt.Errorf("wire: read response code: %w", err)
	}
	code = transport.Code(binary.BigEndian.Uint16(cb[:2]))
	n := int(binary.BigEndian.Uint16(cb[2:]))
	if n > MaxMessageLen {
		return 0, "", nil, fmt.Errorf("wire: read response: %w: message length %d exceeds %d", ErrFrame, n, MaxMessageLen)
	}
	mb := make([]byte, n)
	if err := readFull(r, mb); err != nil {
		return 0, "", nil, fmt.Errorf("wire: read response message: %w", err)
	}
	bl, err := readBodyLen(r)
	if err != nil {
		return 0, "", nil, fmt.Errorf("wire: read response: %w", err)
	}
	body, err = readBody(r, bl)
	if err != nil {
		return 0, "", nil, fmt.Errorf("wire: read response: %w", err)
	}
	return code, string(mb), body, nil
}

func checkMethod(method string) error {
	if len(method) == 0 || len(method) > MaxMethodLen {
		return fmt.Errorf("%w: method length %d not in 1..%d", ErrFrame, len(method), MaxMethodLen)
	}
	for i := 0; i < len(method); i++ {
		if c := method[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: method %q has a non-printable byte 0x%02x at %d", ErrFrame, method, c, i)
		}
	}
	return nil
}

func writeFrame(w io.Writer, hdr, body []byte) error {
	// NB: small bodies go out in the header's write so that one frame is one Write.
	if len(body) <= 4096 {
		_, err := w.Write(append(hdr, body...))
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

func readHeader(r io.Reader, kind byte) error {
	var h [4]byte
	if n, err := io.ReadFull(r, h[:]); err != nil {
		switch {
		case n == 0 && errors.Is(err, io.EOF):
			return fmt.Errorf("%w: empty input: %w", ErrFrame, io.EOF)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("%w: header truncated: %w", ErrFrame, io.ErrUnexpectedEOF)
		default:
			return fmt.Errorf("header: %w", err)
		}
	}
	if h[0] != magic[0] || h[1] != magic[1] {
		return fmt.Errorf("%w: bad magic %q", ErrFrame, h[:2])
	}
	if h[2] != Version {
		return fmt.Errorf("%w: unsupported version %d (want %d)", ErrFrame, h[2], Version)
	}
	if h[3] != kind {
		return fmt.Errorf("%w: kind %d, want %d", ErrFrame, h[3], kind)
	}
	return nil
}

// readBodyLen reads a body length field and checks it against MaxBodyLen.
func readBodyLen(r io.Reader) (int, error) {
	var lb [4]byte
	if err := readFull(r, lb[:]); err != nil {
		return 0, fmt.Errorf("body length: %w", err)
	}
	n := int(binary.BigEndian.Uint32(lb[:]))
	if n > MaxBodyLen {
		return 0, fmt.Errorf("%w: body length %d exceeds %d", ErrFrame, n, MaxBodyLen)
	}
	return n, nil
}

// readBody reads a body of n bytes into a buffer that grows with what has arrived: it
// starts at min(n, FirstBodyBuffer) and, each time it is full, is replaced by one of at
// most BodyGrowFactor times the bytes received (the last one exactly n). So a lying length
// gets a buffer of at most FirstBodyBuffer or BodyGrowFactor times the bytes the peer
// actually sent, and a body is copied at most about 1/(BodyGrowFactor-1) times over.
func readBody(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, min(n, FirstBodyBuffer))
	got := 0
	for {
		m, err := io.ReadFull(r, b[got:])
		got += m
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: body truncated at %d of %d bytes: %w", ErrFrame, got, n, io.ErrUnexpectedEOF)
			}
			return nil, fmt.Errorf("body: %w", err)
		}
		if got == n {
			return b, nil
		}
		// NB: b is full and got bytes have arrived; the next buffer is bounded by them.
		next := make([]byte, min(n, BodyGrowFactor*got))
		copy(next, b)
		b = next
	}
}

// readFull is io.ReadFull inside a frame: any end of input is io.ErrUnexpectedEOF and
// wraps ErrFrame.
func readFull(r io.Reader, b []byte) error {
	_, err := io.ReadFull(r, b)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: truncated: %w", ErrFrame, io.ErrUnexpectedEOF)
	default:
		return err
	}
}
