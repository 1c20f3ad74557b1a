package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// allocSlack covers what the runtime and the error values allocate besides the buffers
// under test. It is well below the 1 MiB a lying length field used to cost.
const allocSlack = 128 << 10

// allocated runs f and returns the bytes it allocated on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// frameSeeds are real frames: requests and responses with and without bodies, one whose
// length field announces the largest body and brings 100 bytes, and garbage. (Bodies
// past FirstBodyBuffer are left to body_test.go: large seeds make minimizing slow.)
func frameSeeds(f *testing.F) {
	lying := reqFrame(f, "meta.Enroll", nil)
	binary.BigEndian.PutUint32(lying[len(lying)-4:], wire.MaxBodyLen)
	for _, s := range [][]byte{
		reqFrame(f, "meta.Enroll", []byte("a real enrollment body is a few hundred bytes")),
		reqFrame(f, "shard.Put", pattern(300)),
		reqFrame(f, "x", nil),
		respFrame(f, transport.OK, "", []byte("reply")),
		respFrame(f, transport.PermissionDenied, "certificate revoked", nil),
		append(lying, pattern(100)...),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{},
	} {
		f.Add(s)
	}
}

// FuzzReadRequestHeader: any input yields a header or an ErrFrame, never a panic. A
// header read consumes exactly its own bytes, which encode the method and length it
// returns; its length is at most MaxBodyLen.
func FuzzReadRequestHeader(f *testing.F) {
	frameSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := wire.ReadRequestHeader(r)
		if err != nil {
			if !errors.Is(err, wire.ErrFrame) {
				t.Fatalf("error %v does not wrap ErrFrame", err)
			}
			return
		}
		if h.BodyLen < 0 || h.BodyLen > wire.MaxBodyLen {
			t.Fatalf("body length %d out of range", h.BodyLen)
		}
		used := len(data) - r.Len()
		want := reqFrame(t, h.Method, nil)
		binary.BigEndian.PutUint32(want[len(want)-4:], uint32(h.BodyLen))
		if !bytes.Equal(data[:used], want) {
			t.Fatalf("header %+v read from %x, which encodes as %x", h, data[:used], want)
		}
	})
}

// FuzzReadFrame: a request or response frame read from arbitrary bytes, handed out a few
// bytes per Read as a network stream does, is either an ErrFrame or a frame that
// re-encodes to exactly the bytes it was read from; never a panic, and never more memory
// than FirstBodyBuffer plus a small multiple of the input, whatever length it announces.
func FuzzReadFrame(f *testing.F) {
	frameSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		limit := uint64(wire.FirstBodyBuffer + 2*wire.BodyGrowFactor*len(data) + allocSlack)

		r := bytes.NewReader(data)
		var method string
		var body []byte
		var err error
		if n := allocated(func() { method, body, err = wire.ReadRequest(trickle{r, 7}) }); n > limit {
			t.Fatalf("reading a request from %d bytes allocated %d bytes, want at most %d", len(data), n, limit)
		}
		if err != nil {
			if !errors.Is(err, wire.ErrFrame) {
				t.Fatalf("request: error %v does not wrap ErrFrame", err)
			}
		} else if used := len(data) - r.Len(); !bytes.Equal(reqFrame(t, method, body), data[:used]) {
			t.Fatalf("request %q with %d bytes of body does not re-encode to the %d bytes it was read from", method, len(body), used)
		}

		r = bytes.NewReader(data)
		var code transport.Code
		var msg string
		if n := allocated(func() { code, msg, body, err = wire.ReadResponse(trickle{r, 7}) }); n > limit {
			t.Fatalf("reading a response from %d bytes allocated %d bytes, want at most %d", len(data), n, limit)
		}
		if err != nil {
			if !errors.Is(err, wire.ErrFrame) {
				t.Fatalf("response: error %v does not wrap ErrFrame", err)
			}
		} else if used := len(data) - r.Len(); !bytes.Equal(respFrame(t, code, msg, body), data[:used]) {
			t.Fatalf("response %v %q with %d bytes of body does not re-encode to the %d bytes it was read from", code, msg, len(body), used)
		}
	})
}

// batch stands for the shard messages: chunk IDs, payloads, a time and a map.
type batch struct {
	IDs   []chunk.ID        `cbor:"ids"`
	Data  [][]byte          `cbor:"data"`
	At    time.Time         `cbor:"at"`
	Count map[string]uint64 `cbor:"count,omitempty"`
	Next  *batch            `cbor:"next,omitempty"`
}

// messageTypes are representative messages: what a peer without a certificate sends
// (EnrollRequest) and gets, a snapshot (times, IDs, nested pointers) and a shard batch.
var messageTypes = []func() any{
	func() any { return new(meta.EnrollRequest) },
	func() any { return new(meta.EnrollResult) },
	func() any { return new(meta.Snapshot) },
	func() any { return new(batch) },
}

// FuzzUnmarshal: arbitrary bytes decoded into each representative message type are an
// error or a value whose encoding decodes back to a value with the same encoding; never a
// panic, and never more memory than a bounded multiple of the input (Go values can be
// larger than their CBOR: a one-byte empty map becomes a whole struct).
func FuzzUnmarshal(f *testing.F) {
	id := chunk.ID{1, 2, 3}
	for i, v := range []any{
		meta.EnrollRequest{Token: "coffer-enroll-abc", CSR: pattern(244), Name: "host-a"},
		meta.EnrollResult{Cert: []byte("-----BEGIN CERTIFICATE-----"), Vault: "web", Principal: "web01", Serial: "1f"},
		meta.Snapshot{ID: chunk.ID{9}, Vault: "web", Time: time.Unix(1700000000, 5).UTC(), Paths: []string{"/etc"}, Tree: id, Refs: []chunk.ID{id, id}},
		batch{IDs: []chunk.ID{id}, Data: [][]byte{pattern(50)}, At: time.Unix(1, 0).UTC(), Count: map[string]uint64{"a": 1}, Next: &batch{}},
	} {
		b, err := wire.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		newMsg := messageTypes[int(which)%len(messageTypes)]
		v := newMsg()
		var err error
		limit := uint64(512*len(data) + allocSlack)
		if n := allocated(func() { err = wire.Unmarshal(data, v) }); n > limit {
			t.Fatalf("decoding %d bytes into %T allocated %d bytes, want at most %d", len(data), v, n, limit)
		}
		if err != nil {
			return
		}
		b1, err := wire.Marshal(v)
		if err != nil {
			// A decodable value that cannot be encoded (e.g. a time beyond year 9999) is
			// an error, not a panic: the receiver cannot echo it, nothing more.
			return
		}
		v2 := newMsg()
		if err := wire.Unmarshal(b1, v2); err != nil {
			t.Fatalf("%T: own encoding %x does not decode: %v", v, b1, err)
		}
		b2, err := wire.Marshal(v2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("%T: encoding not stable over a round trip: %x then %x (%v)", v, b1, b2, err)
		}
	})
}

// FuzzBytes: decoding arbitrary bytes into a Bytes field never panics, and agrees with
// decoding them into a []byte field: whatever Bytes decodes, []byte decodes to the same
// content (Bytes refuses tagged byte strings, which []byte may accept), and a message
// whose field is a plain byte string or null decodes into both or neither.
func FuzzBytes(f *testing.F) {
	for _, v := range []any{
		aliasMsg{A: "x", Data: pattern(40)},
		aliasMsg{A: "", Data: nil},
		aliasMsg{A: "y", Data: pattern(300)},
	} {
		b, err := wire.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xa2, 0x01, 0x60, 0x02, 0xd8, 0x18, 0x41, 0x00}) // a tagged byte string
	f.Fuzz(func(t *testing.T, data []byte) {
		var a aliasMsg
		aerr := wire.Unmarshal(data, &a)
		var p plainMsg
		perr := wire.Unmarshal(data, &p)
		if aerr == nil {
			if perr != nil {
				t.Fatalf("% x: Bytes decoded, []byte refused: %v", data, perr)
			}
			if a.A != p.A || !bytes.Equal(a.Data, p.Data) {
				t.Fatalf("% x: Bytes decoded %q/%x, []byte %q/%x", data, a.A, []byte(a.Data), p.A, p.Data)
			}
			if len(a.Data) > 0 && !bytes.Contains(data, a.Data) {
				t.Fatalf("% x: decoded bytes %x are not in the input", data, []byte(a.Data))
			}
			return
		}
		if perr == nil && plainOrNull(data, p) {
			t.Fatalf("% x: []byte decoded %x, Bytes refused: %v", data, p.Data, aerr)
		}
	})
}

// plainOrNull reports whether the message data holds its field 2 (if at all) as an
// untagged byte string or null.
func plainOrNull(data []byte, _ plainMsg) bool {
	var raw struct {
		A    string          `cbor:"1,keyasint"`
		Data cbor.RawMessage `cbor:"2,keyasint,omitempty"`
	}
	if err := wire.Unmarshal(data, &raw); err != nil {
		return false
	}
	return len(raw.Data) == 0 || raw.Data[0]>>5 == 2 || (len(raw.Data) == 1 && (raw.Data[0] == 0xf6 || raw.Data[0] == 0xf7))
}
