package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

const mib = 1 << 20

// trickle hands out at most n bytes per Read, like a TLS or QUIC stream does.
type trickle struct {
	r io.Reader
	n int
}

func (t trickle) Read(p []byte) (int, error) { return t.r.Read(p[:min(len(p), t.n)]) }

// pattern returns n bytes that differ from their neighbours, so that a misplaced copy
// shows up as a mismatch.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

func TestBodySizesRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, wire.FirstBodyBuffer - 1, wire.FirstBodyBuffer, wire.FirstBodyBuffer + 1, mib - 1, mib, mib + 1, 2*mib - 1, 8 * mib, 8*mib + 1, 9*mib + 3} {
		body := pattern(n)
		for _, step := range []int{1 << 30, 16 << 10, 1000} {
			frame := reqFrame(t, "shard.Put", body)
			_, got, err := wire.ReadRequest(trickle{bytes.NewReader(frame), step})
			if err != nil {
				t.Fatalf("body of %d bytes, reads of %d: %v", n, step, err)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("body of %d bytes, reads of %d: read back differs", n, step)
			}
			if len(got) != cap(got) {
				t.Fatalf("body of %d bytes: capacity %d, want exact", n, cap(got))
			}
			resp := respFrame(t, transport.OK, "", body)
			_, _, got, err = wire.ReadResponse(trickle{bytes.NewReader(resp), step})
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("response body of %d bytes, reads of %d: err %v, equal %v", n, step, err, bytes.Equal(got, body))
			}
		}
	}
}

func TestBodyTruncated(t *testing.T) {
	const n = 9*mib + 5
	frame := reqFrame(t, "a.b", pattern(n))
	hdr := len(frame) - n
	// Cut inside the first buffer, at its end, just past it, at the end of a grown buffer
	// and one byte short of the whole body.
	for _, at := range []int{0, 1, wire.FirstBodyBuffer - 1, wire.FirstBodyBuffer, wire.FirstBodyBuffer + 1, 2 * wire.FirstBodyBuffer, 8 * mib, n - 1} {
		_, _, err := wire.ReadRequest(trickle{bytes.NewReader(frame[:hdr+at]), 64 << 10})
		if !errors.Is(err, wire.ErrFrame) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("body cut at %d of %d: err %v, want ErrFrame and io.ErrUnexpectedEOF", at, n, err)
		}
	}
}

// TestBodyLyingLength sends a frame whose length field announces the largest body
// allowed but whose stream ends after a little of it: the reader must fail without
// allocating anywhere near the announced length.
func TestBodyLyingLength(t *testing.T) {
	for _, sent := range []int{0, 100, wire.FirstBodyBuffer, wire.FirstBodyBuffer + 1, mib, mib + 1} {
		frame := reqFrame(t, "a.b", nil)
		binary.BigEndian.PutUint32(frame[len(frame)-4:], wire.MaxBodyLen)
		frame = append(frame, pattern(sent)...)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err := wire.ReadRequest(bytes.NewReader(frame))
		runtime.ReadMemStats(&after)
		if !errors.Is(err, wire.ErrFrame) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%d bytes sent: err %v, want ErrFrame and io.ErrUnexpectedEOF", sent, err)
		}
		// No buffer after the first is above BodyGrowFactor times what had arrived, and
		// each is at least BodyGrowFactor times the one before, so together they are at
		// most the first plus twice that (and a little slack for the runtime and the
		// error).
		limit := uint64(wire.FirstBodyBuffer + 2*wire.BodyGrowFactor*sent + 64<<10)
		if got := after.TotalAlloc - before.TotalAlloc; got > limit {
			t.Fatalf("%d bytes sent with a length of %d: allocated %d bytes, want at most %d", sent, wire.MaxBodyLen, got, limit)
		}
	}
}

// TestBodyLengthAboveMax is rejected before anything is read or allocated.
func TestBodyLengthAboveMax(t *testing.T) {
	frame := reqFrame(t, "a.b", nil)
	binary.BigEndian.PutUint32(frame[len(frame)-4:], wire.MaxBodyLen+1)
	if _, _, err := wire.ReadRequest(bytes.NewReader(frame)); !errors.Is(err, wire.ErrFrame) {
		t.Fatalf("err %v, want ErrFrame", err)
	}
}

func BenchmarkReadRequest(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"64KiB", 64 << 10}, {"1MiB+1", mib + 1}, {"3MiB", 3 * mib}, {"8MiB", 8 * mib}} {
		b.Run(size.name, func(b *testing.B) {
			frame := reqFrame(b, "shard.Put", pattern(size.n))
			b.SetBytes(int64(size.n))
			b.ReportAllocs()
			r := bytes.NewReader(frame)
			for b.Loop() {
				r.Reset(frame)
				if _, _, err := wire.ReadRequest(trickle{r, 16 << 10}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
