package erasure

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
)

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// lose returns a copy of the stripe's header list with the given indexes set to nil.
func lose(shards [][]byte, idx ...int) [][]byte {
	out := make([][]byte, len(shards))
	copy(out, shards)
	for _, i := range idx {
		out[i] = nil
	}
	return out
}

// subsets calls fn with every subset of {0..n-1} of size s.
func subsets(n, s int, fn func([]int)) {
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == s {
			fn(cur)
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
}

func TestEncodeShape(t *testing.T) {
	c := NewCodec()
	r := rand.New(rand.NewPCG(1, 1))
	for _, tc := range []struct{ k, m, size int }{{4, 2, 1}, {4, 2, 4}, {4, 2, 5}, {4, 2, 1 << 20}, {8, 3, 1000}, {1, 0, 7}, {3, 0, 10}, {1, 2, 9}} {
		t.Run(fmt.Sprintf("%d+%d/%d", tc.k, tc.m, tc.size), func(t *testing.T) {
			data := randBytes(r, tc.size)
			orig := bytes.Clone(data)
			shards, err := c.Encode(tc.k, tc.m, data)
			if err != nil {
				t.Fatal(err)
			}
			if len(shards) != tc.k+tc.m {
				t.Fatalf("%d shards, want %d", len(shards), tc.k+tc.m)
			}
			per := ShardLen(tc.k, tc.size)
			for i, s := range shards {
				if len(s) != per {
					t.Fatalf("shard %d has %d bytes, want %d", i, len(s), per)
				}
			}
			// The data shards are the chunk, zero-padded.
			var joined []byte
			for _, s := range shards[:tc.k] {
				joined = append(joined, s...)
			}
			if !bytes.Equal(joined[:tc.size], data) || bytes.ContainsFunc(joined[tc.size:], func(r rune) bool { return r != 0 }) {
				t.Fatal("data shards are not the zero-padded chunk")
			}
			// Not retained: changing the input does not change the shards.
			data[0] ^= 0xff
			if shards[0][0] != orig[0] {
				t.Fatal("Encode retained the input")
			}
			got, err := c.Decode(tc.k, tc.m, shards, tc.size)
			if err != nil || !bytes.Equal(got, orig) {
				t.Fatalf("Decode = %v", err)
			}
		})
	}
}

func TestEncodeInvalid(t *testing.T) {
	c := NewCodec()
	for _, tc := range []struct {
		k, m int
		data []byte
	}{{0, 2, []byte("x")}, {4, -1, []byte("x")}, {200, 57, []byte("x")}, {4, 2, nil}, {4, 2, []byte{}}} {
		if _, err := c.Encode(tc.k, tc.m, tc.data); !errors.Is(err, chunkstore.ErrInvalid) {
			t.Errorf("Encode(%d+%d, %d bytes) = %v, want ErrInvalid", tc.k, tc.m, len(tc.data), err)
		}
	}
}

func TestLoseAnyM(t *testing.T) {
	c := NewCodec()
	r := rand.New(rand.NewPCG(2, 2))
	for _, p := range []struct{ k, m int }{{4, 2}, {8, 3}} {
		t.Run(fmt.Sprintf("%d+%d", p.k, p.m), func(t *testing.T) {
			n := p.k + p.m
			size := 10000 + r.IntN(5000)
			data := randBytes(r, size)
			shards, err := c.Encode(p.k, p.m, data)
			if err != nil {
				t.Fatal(err)
			}
			for lost := 1; lost <= p.m; lost++ {
				subsets(n, lost, func(idx []int) {
					in := lose(shards, idx...)
					got, err := c.Decode(p.k, p.m, in, size)
					if err != nil || !bytes.Equal(got, data) {
						t.Fatalf("lost %v: Decode = %v", idx, err)
					}
					for _, i := range idx {
						if in[i] != nil {
							t.Fatalf("Decode modified the caller's slice at %d", i)
						}
					}
					if err := c.Reconstruct(p.k, p.m, in); err != nil {
						t.Fatalf("lost %v: Reconstruct: %v", idx, err)
					}
					for i := range in {
						if !bytes.Equal(in[i], shards[i]) {
							t.Fatalf("lost %v: shard %d rebuilt wrong", idx, i)
						}
					}
				})
			}
			// Losing m+1 fails, naming have/need.
			subsets(n, p.m+1, func(idx []int) {
				in := lose(shards, idx...)
				_, err := c.Decode(p.k, p.m, in, size)
				if !errors.Is(err, chunkstore.ErrUnavailable) {
					t.Fatalf("lost %v: Decode = %v, want ErrUnavailable", idx, err)
				}
				want := fmt.Sprintf("have %d of %d shards, need %d", n-p.m-1, n, p.k)
				if !bytes.Contains([]byte(err.Error()), []byte(want)) {
					t.Fatalf("error %q does not say %q", err, want)
				}
				if err := c.Reconstruct(p.k, p.m, in); !errors.Is(err, chunkstore.ErrUnavailable) {
					t.Fatalf("lost %v: Reconstruct = %v", idx, err)
				}
			})
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	c := NewCodec()
	shards, err := c.Encode(4, 2, []byte("hello, erasure world"))
	if err != nil {
		t.Fatal(err)
	}
	short := lose(shards)
	short[5] = short[5][:2]
	for name, call := range map[string]func() error{
		"wrong count":   func() error { _, err := c.Decode(4, 2, shards[:5], 20); return err },
		"unequal sizes": func() error { _, err := c.Decode(4, 2, short, 20); return err },
		"size too big":  func() error { _, err := c.Decode(4, 2, shards, 21); return err },
		"size zero":     func() error { _, err := c.Decode(4, 2, shards, 0); return err },
		"bad profile":   func() error { _, err := c.Decode(0, 6, shards, 20); return err },
	} {
		if err := call(); !errors.Is(err, chunkstore.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestVerify(t *testing.T) {
	c := NewCodec()
	shards, err := c.Encode(4, 2, bytes.Repeat([]byte("abc"), 1000))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Verify(4, 2, shards); !ok || err != nil {
		t.Fatalf("Verify(good) = %v, %v", ok, err)
	}
	shards[1][7] ^= 1
	if ok, err := c.Verify(4, 2, shards); ok || err != nil {
		t.Fatalf("Verify(flipped) = %v, %v", ok, err)
	}
	if _, err := c.Verify(4, 2, lose(shards, 0)); !errors.Is(err, chunkstore.ErrInvalid) {
		t.Fatalf("Verify(incomplete) = %v", err)
	}
}

func TestCodecConcurrent(t *testing.T) {
	c := NewCodec()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 9))
			k, m := 2+g%3, 1+g%2
			for range 50 {
				data := randBytes(r, 1+r.IntN(4000))
				shards, err := c.Encode(k, m, data)
				if err != nil {
					errs <- err
					return
				}
				got, err := c.Decode(k, m, lose(shards, r.IntN(k+m)), len(data))
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("goroutine %d: decode: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func benchmarkSizes(b *testing.B, fn func(b *testing.B, c *Codec, data []byte)) {
	c := NewCodec()
	data := randBytes(rand.New(rand.NewPCG(5, 5)), 1<<20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	fn(b, c, data)
}

func BenchmarkEncode4x2(b *testing.B) {
	benchmarkSizes(b, func(b *testing.B, c *Codec, data []byte) {
		for b.Loop() {
			if _, err := c.Encode(4, 2, data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecode4x2(b *testing.B) {
	for _, lost := range [][]int{nil, {0}, {1, 3}} {
		b.Run(fmt.Sprintf("lost%v", lost), func(b *testing.B) {
			benchmarkSizes(b, func(b *testing.B, c *Codec, data []byte) {
				shards, err := c.Encode(4, 2, data)
				if err != nil {
					b.Fatal(err)
				}
				in := lose(shards, lost...)
				for b.Loop() {
					if _, err := c.Decode(4, 2, in, len(data)); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
