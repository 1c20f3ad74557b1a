package wire_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

type msg struct {
	ID    chunk.ID
	Names map[string]int
	When  time.Time
	Data  []byte
}

func TestMarshalDeterministic(t *testing.T) {
	m := msg{ID: chunk.ID{1, 2, 3}, Names: map[string]int{}, When: time.Date(2025, 3, 4, 5, 6, 7, 891, time.UTC), Data: []byte("d")}
	for i := range 50 {
		m.Names[strings.Repeat("k", i%7)+string(rune('a'+i%26))] = i
	}
	first, err := wire.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := wire.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, again) {
			t.Fatal("encoding is not deterministic")
		}
	}
	var back msg
	if err := wire.Unmarshal(first, &back); err != nil {
		t.Fatal(err)
	}
	if back.ID != m.ID || !back.When.Equal(m.When) || len(back.Names) != len(m.Names) || !bytes.Equal(back.Data, m.Data) {
		t.Fatalf("round trip: got %+v", back)
	}
	// The time travels as RFC 3339 text with nanoseconds, the ID as a 32-byte string.
	if !bytes.Contains(first, []byte("2025-03-04T05:06:07.000000891Z")) {
		t.Error("time not encoded as RFC 3339 nanos")
	}
	if !bytes.Contains(first, append([]byte{0x58, 32}, m.ID[:]...)) {
		t.Error("chunk ID not encoded as a 32-byte byte string")
	}
}

func TestUnmarshalRejects(t *testing.T) {
	good, err := wire.Marshal(msg{Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	var m msg
	for name, in := range map[string][]byte{
		"trailing":  append(bytes.Clone(good), 0),
		"truncated": good[:len(good)-1],
		"garbage":   []byte{0xff, 0xfe},
		"dup key":   {0xa2, 0x61, 'x', 0x01, 0x61, 'x', 0x02},
	} {
		if err := wire.Unmarshal(in, &m); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

type fakeCaller func(ctx context.Context, addr, method string, body []byte) ([]byte, error)

func (f fakeCaller) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	return f(ctx, addr, method, body)
}

func TestCall(t *testing.T) {
	type req struct{ A int }
	type resp struct{ B int }
	echo := fakeCaller(func(_ context.Context, addr, method string, body []byte) ([]byte, error) {
		var r req
		if err := wire.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		if method == "x.Fail" {
			return nil, transport.Errorf(transport.Locked, "locked at %s", addr)
		}
		if method == "x.Junk" {
			return []byte{0xff}, nil
		}
		return wire.Marshal(resp{B: r.A * 2})
	})
	var out resp
	if err := wire.Call(context.Background(), echo, "n1", "x.Double", req{A: 21}, &out); err != nil || out.B != 42 {
		t.Fatalf("got %+v, %v", out, err)
	}
	if err := wire.Call(context.Background(), echo, "n1", "x.Double", req{A: 1}, nil); err != nil {
		t.Fatalf("nil resp: %v", err)
	}
	err := wire.Call(context.Background(), echo, "n1", "x.Fail", req{}, &out)
	if transport.CodeOf(err) != transport.Locked {
		t.Fatalf("remote error: %v", err)
	}
	err = wire.Call(context.Background(), echo, "n1", "x.Junk", req{}, &out)
	var te *transport.Error
	if !errors.As(err, &te) || te.Code != transport.Internal || !strings.Contains(err.Error(), "x.Junk") {
		t.Fatalf("bad reply: %v", err)
	}
}

// putLike mirrors a chunk.Put request: many IDs, each with a large byte string.
type putLike struct {
	Items []putItem `cbor:"1,keyasint"`
}

type putItem struct {
	ID   chunk.ID `cbor:"1,keyasint"`
	Data []byte   `cbor:"2,keyasint"`
}

func newPutLike(items, size int) (putLike, int) {
	var p putLike
	total := 0
	for i := range items {
		d := bytes.Repeat([]byte{byte(i)}, size+i)
		p.Items = append(p.Items, putItem{ID: chunk.ID{byte(i), 1}, Data: d})
		total += len(d)
	}
	return p, total
}

func TestMarshalSizedSameBytes(t *testing.T) {
	for _, v := range []any{
		msg{ID: chunk.ID{9}, Names: map[string]int{"b": 2, "a": 1}, When: time.Unix(5, 6).UTC(), Data: []byte("x")},
		struct{}{},
		[]byte(nil),
	} {
		want, err := wire.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, hint := range []int{-1, 0, 1, len(want), 1 << 20} {
			got, err := wire.MarshalSized(v, hint)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%T with hint %d: % x, %v; want % x", v, hint, got, err, want)
			}
		}
	}
	p, total := newPutLike(40, 100<<10)
	want, err := wire.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, hint := range []int{0, total, len(want), len(want) + 1, wire.MaxBodyLen + 1, 1 << 40} {
		got, err := wire.MarshalSized(p, hint)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("put-like with hint %d: %d bytes, %v; want the %d bytes of Marshal", hint, len(got), err, len(want))
		}
		if hint == len(want) && cap(got) != len(want) {
			t.Fatalf("exact hint: capacity %d, want %d (no growth)", cap(got), len(want))
		}
	}
	if _, err := wire.MarshalSized(make(chan int), 10); err == nil {
		t.Fatal("MarshalSized of a channel: no error")
	}
}

func TestEncodedIsSentUnchanged(t *testing.T) {
	type req struct{ A []byte }
	enc, err := wire.MarshalSized(req{A: []byte("abc")}, 64)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := wire.Marshal(enc); err != nil || !bytes.Equal(again, enc) {
		t.Fatalf("Marshal(Encoded) = % x, %v; want % x", again, err, enc)
	}
	var sent []byte
	c := fakeCaller(func(_ context.Context, _, _ string, body []byte) ([]byte, error) {
		sent = body
		return nil, nil
	})
	if err := wire.Call(context.Background(), c, "n1", "x.Put", enc, nil); err != nil {
		t.Fatal(err)
	}
	want, _ := wire.Marshal(req{A: []byte("abc")})
	if !bytes.Equal(sent, want) {
		t.Fatalf("Call sent % x, want % x", sent, want)
	}
}

func BenchmarkMarshalPut(b *testing.B) {
	p, total := newPutLike(8, 1<<20) // one 8 MiB chunk.Put call
	b.Run("Marshal", func(b *testing.B) {
		b.SetBytes(int64(total))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := wire.Marshal(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("MarshalSized", func(b *testing.B) {
		b.SetBytes(int64(total))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := wire.MarshalSized(p, total+len(p.Items)*48+16); err != nil {
				b.Fatal(err)
			}
		}
	})
}
