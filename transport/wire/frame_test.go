package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

func reqFrame(t testing.TB, method string, body []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := wire.WriteRequest(&b, method, body); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func respFrame(t testing.TB, code transport.Code, msg string, body []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := wire.WriteResponse(&b, code, msg, body); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRequestRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0xab}, 3<<20) // exercises the incremental body read
	for _, tc := range []struct {
		method string
		body   []byte
	}{
		{"shard.Put", []byte("hello")},
		{"x", nil},
		{strings.Repeat("m", wire.MaxMethodLen), big},
	} {
		r := bytes.NewReader(reqFrame(t, tc.method, tc.body))
		m, b, err := wire.ReadRequest(r)
		if err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		if m != tc.method || !bytes.Equal(b, tc.body) {
			t.Fatalf("%s: got %q / %d bytes", tc.method, m, len(b))
		}
		if r.Len() != 0 {
			t.Fatalf("%s: %d bytes left unread", tc.method, r.Len())
		}
	}
}

func TestRequestLayout(t *testing.T) {
	got := reqFrame(t, "a.B", []byte{9})
	want := []byte{'C', 'F', 1, 1, 0, 3, 'a', '.', 'B', 0, 0, 0, 1, 9}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	got = respFrame(t, transport.NotFound, "no", []byte{7})
	want = []byte{'C', 'F', 1, 2, 0, 1, 0, 2, 'n', 'o', 0, 0, 0, 1, 7}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
}

func TestResponseRoundTrip(t *testing.T) {
	long := strings.Repeat("e", wire.MaxMessageLen+100)
	for _, tc := range []struct {
		code    transport.Code
		msg     string
		wantMsg string
		body    []byte
	}{
		{transport.OK, "", "", []byte("payload")},
		{transport.Corrupt, "chunk abc corrupt", "chunk abc corrupt", nil},
		{transport.Internal, long, long[:wire.MaxMessageLen], nil},
	} {
		c, m, b, err := wire.ReadResponse(bytes.NewReader(respFrame(t, tc.code, tc.msg, tc.body)))
		if err != nil {
			t.Fatal(err)
		}
		if c != tc.code || m != tc.wantMsg || !bytes.Equal(b, tc.body) {
			t.Fatalf("got %v %q %q", c, m, b)
		}
	}
}

func TestWriteRejectsBadInput(t *testing.T) {
	for _, m := range []string{"", "has space", "tab\t", "é", strings.Repeat("m", wire.MaxMethodLen+1)} {
		var b bytes.Buffer
		err := wire.WriteRequest(&b, m, nil)
		if !errors.Is(err, wire.ErrFrame) {
			t.Errorf("method %q: err %v, want ErrFrame", m, err)
		}
		if b.Len() != 0 {
			t.Errorf("method %q: %d bytes written", m, b.Len())
		}
	}
	huge := make([]byte, wire.MaxBodyLen+1)
	var b bytes.Buffer
	if err := wire.WriteRequest(&b, "a.b", huge); !errors.Is(err, wire.ErrFrame) || b.Len() != 0 {
		t.Errorf("oversize request: err %v, %d bytes written", err, b.Len())
	}
	if err := wire.WriteResponse(&b, transport.OK, "", huge); !errors.Is(err, wire.ErrFrame) || b.Len() != 0 {
		t.Errorf("oversize response: err %v, %d bytes written", err, b.Len())
	}
}

func TestReadTruncated(t *testing.T) {
	req := reqFrame(t, "shard.Get", []byte("0123456789"))
	for n := range len(req) {
		_, _, err := wire.ReadRequest(bytes.NewReader(req[:n]))
		if !errors.Is(err, wire.ErrFrame) {
			t.Fatalf("request cut at %d: err %v, want ErrFrame", n, err)
		}
		want := io.ErrUnexpectedEOF
		if n == 0 {
			want = io.EOF
		}
		if !errors.Is(err, want) {
			t.Fatalf("request cut at %d: err %v, want %v", n, err, want)
		}
	}
	resp := respFrame(t, transport.Locked, "locked", []byte("abc"))
	for n := range len(resp) {
		if _, _, _, err := wire.ReadResponse(bytes.NewReader(resp[:n])); !errors.Is(err, wire.ErrFrame) {
			t.Fatalf("response cut at %d: err %v, want ErrFrame", n, err)
		}
	}
	// A long body cut short goes through the incremental read path.
	big := reqFrame(t, "a.b", make([]byte, 2<<20))
	if _, _, err := wire.ReadRequest(bytes.NewReader(big[:len(big)-1])); !errors.Is(err, wire.ErrFrame) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("big body cut: err %v", err)
	}
}

func TestReadGarbage(t *testing.T) {
	good := reqFrame(t, "a.b", []byte("x"))
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	hugeLen := mutate(func(b []byte) []byte {
		binary.BigEndian.PutUint32(b[len(b)-5:], wire.MaxBodyLen+1)
		return b
	})
	cases := map[string][]byte{
		"http":          []byte("GET / HTTP/1.1\r\n\r\n"),
		"bad magic":     mutate(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version 2":     mutate(func(b []byte) []byte { b[2] = 2; return b }),
		"response kind": mutate(func(b []byte) []byte { b[3] = 2; return b }),
		"zero method":   {'C', 'F', 1, 1, 0, 0, 0, 0, 0, 0},
		"long method":   mutate(func(b []byte) []byte { b[4], b[5] = 0, wire.MaxMethodLen+1; return b }),
		"ctl in method": mutate(func(b []byte) []byte { b[7] = '\n'; return b }),
		"huge body":     hugeLen,
	}
	for name, in := range cases {
		if _, _, err := wire.ReadRequest(bytes.NewReader(in)); !errors.Is(err, wire.ErrFrame) {
			t.Errorf("%s: err %v, want ErrFrame", name, err)
		}
	}
	if _, _, _, err := wire.ReadResponse(bytes.NewReader(good)); !errors.Is(err, wire.ErrFrame) {
		t.Errorf("request read as response: err %v, want ErrFrame", err)
	}
	longMsg := []byte{'C', 'F', 1, 2, 0, 0, 0xff, 0xff}
	if _, _, _, err := wire.ReadResponse(bytes.NewReader(longMsg)); !errors.Is(err, wire.ErrFrame) {
		t.Errorf("oversize message: err %v, want ErrFrame", err)
	}
}

type failReader struct{ err error }

func (f failReader) Read([]byte) (int, error) { return 0, f.err }

func TestReaderErrorIsNotFrameError(t *testing.T) {
	boom := errors.New("stream reset")
	_, _, err := wire.ReadRequest(failReader{boom})
	if !errors.Is(err, boom) || errors.Is(err, wire.ErrFrame) {
		t.Fatalf("err %v: want the reader's error, not ErrFrame", err)
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add(reqFrame(f, "shard.Put", []byte("body")))
	f.Add(respFrame(f, transport.NotFound, "gone", []byte("b")))
	f.Add([]byte("CF"))
	f.Add([]byte{'C', 'F', 1, 1, 0, 1, 'a', 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		method, body, err := wire.ReadRequest(bytes.NewReader(in))
		if err == nil {
			// Whatever decodes must re-encode to the bytes consumed.
			again := reqFrame(t, method, body)
			if !bytes.Equal(again, in[:len(again)]) {
				t.Fatalf("re-encoding differs: % x vs % x", again, in[:len(again)])
			}
		} else if !errors.Is(err, wire.ErrFrame) {
			t.Fatalf("error does not wrap ErrFrame: %v", err)
		}
		code, msg, body, err := wire.ReadResponse(bytes.NewReader(in))
		if err == nil {
			again := respFrame(t, code, msg, body)
			if !bytes.Equal(again, in[:len(again)]) {
				t.Fatalf("response re-encoding differs")
			}
		} else if !errors.Is(err, wire.ErrFrame) {
			t.Fatalf("response error does not wrap ErrFrame: %v", err)
		}
	})
}
