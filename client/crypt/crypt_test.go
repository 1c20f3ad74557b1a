package crypt

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// testMaster returns a deterministic master key for seed (tests only).
func testMaster(seed uint64) MasterKey {
	var mk MasterKey
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})
	r.Read(mk[:])
	return mk
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 2}).Read(b)
	return b
}

// textBytes returns n bytes of log-like text that zstd compresses about 3-5x.
func textBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	var b bytes.Buffer
	paths := []string{"/api/v1/items", "/api/v1/users", "/static/app.js", "/healthz", "/api/v2/orders"}
	for b.Len() < n {
		fmt.Fprintf(&b, "2026-03-%02dT%02d:%02d:%02dZ host-%d %s %s/%d status=%d bytes=%d dur=%dms\n",
			1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(16),
			[]string{"GET", "PUT", "POST"}[r.IntN(3)], paths[r.IntN(len(paths))], r.IntN(100000),
			[]int{200, 201, 404, 500}[r.IntN(4)], r.IntN(1<<20), r.IntN(900))
	}
	return b.Bytes()[:n]
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := DeriveKeys(testMaster(1))
	cases := []struct {
		name       string
		plain      []byte
		compressed bool
	}{
		{"empty", []byte{}, false},
		{"one byte", []byte{7}, false},
		{"tiny text below minCompressSize", textBytes(1, minCompressSize-1), false},
		{"small text", textBytes(2, 4<<10), true},
		{"random 4KiB", randomBytes(3, 4<<10), false},
		{"text 1MiB", textBytes(4, 1<<20), true},
		{"random 1MiB", randomBytes(5, 1<<20), false},
		{"zeros 1MiB", make([]byte, 1<<20), true},
		{"random head then zeros", append(randomBytes(6, 2*sampleSize), make([]byte, 1<<20)...), true},
		{"random head and tail, zeros between", slices.Concat(randomBytes(6, 2*sampleSize), make([]byte, 1<<20), randomBytes(7, sampleSize)), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := k.ChunkID(tc.plain)
			prefix := []byte("prefix")
			sealed, err := k.Seal(append([]byte(nil), prefix...), id, tc.plain)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(sealed, prefix) {
				t.Fatalf("Seal did not append to dst")
			}
			env := sealed[len(prefix):]
			if got := env[offComp] == compZstd; got != tc.compressed {
				t.Errorf("compressed = %v, want %v (envelope %d bytes for %d)", got, tc.compressed, len(env), len(tc.plain))
			}
			if tc.compressed && len(env)-Overhead > len(tc.plain)*7/8 {
				t.Errorf("kept compressed body of %d bytes for %d bytes of input", len(env)-Overhead, len(tc.plain))
			}
			if !tc.compressed && len(env) != len(tc.plain)+Overhead {
				t.Errorf("uncompressed envelope is %d bytes, want %d", len(env), len(tc.plain)+Overhead)
			}
			if !tc.compressed && len(tc.plain) > 64 && bytes.Contains(env, tc.plain[:64]) {
				t.Errorf("envelope contains plaintext")
			}
			got, err := k.Open([]byte("x"), id, env)
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != 'x' || !bytes.Equal(got[1:], tc.plain) {
				t.Fatalf("Open returned %d bytes, not the %d-byte plaintext after dst", len(got), len(tc.plain))
			}
		})
	}
}

// TestSealRandomNonce: sealing the same chunk twice gives different envelopes that both open.
// TestSealIsDeterministic: sealing the same chunk twice gives the same envelope (so shards
// of an interrupted upload agree with a rerun's), while different bodies under one chunk
// key (here: the same plaintext stored compressed and uncompressed, as another compressor
// version might) never share a nonce.
func TestSealIsDeterministic(t *testing.T) {
	k := DeriveKeys(testMaster(1))
	p := textBytes(9, 10000)
	id := k.ChunkID(p)
	a, err := k.Seal(nil, id, p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Seal(nil, id, p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("two seals of one chunk differ")
	}
	if a[offComp] != compZstd {
		t.Fatalf("text was not compressed (comp %d)", a[offComp])
	}
	other := DeriveKeys(testMaster(1))
	other.comp = nil // seal without compression: another body under the same chunk key
	c, err := other.Seal(nil, id, p)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a[offNonce:headerSize], c[offNonce:headerSize]) {
		t.Fatalf("different bodies under one chunk key share a nonce")
	}
	for _, s := range [][]byte{a, c} {
		if got, err := k.Open(nil, id, s); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("open: %v", err)
		}
	}
	// Other plaintexts get other nonces.
	q := textBytes(10, 10000)
	d, err := k.Seal(nil, k.ChunkID(q), q)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a[offNonce:headerSize], d[offNonce:headerSize]) {
		t.Fatalf("two chunks share a nonce")
	}
}

func TestOpenTamperAnyByte(t *testing.T) {
	k := DeriveKeys(testMaster(2))
	for _, plain := range [][]byte{textBytes(3, 700), randomBytes(4, 300)} {
		id := k.ChunkID(plain)
		sealed, err := k.Seal(nil, id, plain)
		if err != nil {
			t.Fatal(err)
		}
		for i := range sealed {
			for _, flip := range []byte{0x01, 0x80, 0xff} {
				bad := bytes.Clone(sealed)
				bad[i] ^= flip
				if _, err := k.Open(nil, id, bad); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("byte %d ^ %#x of %d (comp %d): err = %v, want ErrCorrupt", i, flip, len(sealed), sealed[offComp], err)
				}
			}
		}
		for n := range len(sealed) {
			if _, err := k.Open(nil, id, sealed[:n]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("truncated to %d of %d: err = %v, want ErrCorrupt", n, len(sealed), err)
			}
		}
		if _, err := k.Open(nil, id, append(bytes.Clone(sealed), 0)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("extended by one byte: err = %v, want ErrCorrupt", err)
		}
	}
}

func TestOpenHeaderErrorsNameTheProblem(t *testing.T) {
	k := DeriveKeys(testMaster(3))
	plain := textBytes(1, 1000)
	id := k.ChunkID(plain)
	sealed, err := k.Seal(nil, id, plain)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(b []byte) []byte
		want string
	}{
		{"short", func(b []byte) []byte { return b[:Overhead-1] }, "truncated"},
		{"magic", func(b []byte) []byte { b[offMagic] = 'x'; return b }, "magic"},
		{"version", func(b []byte) []byte { b[offVersion] = 2; return b }, "version 2"},
		{"generation", func(b []byte) []byte { b[offGen+3] = 5; return b }, "key generation 5"},
		{"compression", func(b []byte) []byte { b[offComp] = 9; return b }, "compression 9"},
		{"body", func(b []byte) []byte { b[headerSize] ^= 1; return b }, "authentication failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.Open(nil, id, tc.edit(bytes.Clone(sealed)))
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), id.Str()) {
				t.Fatalf("err = %v, want ErrCorrupt naming %q and the chunk", err, tc.want)
			}
		})
	}
}

func TestOpenWrongID(t *testing.T) {
	k := DeriveKeys(testMaster(4))
	plain := textBytes(2, 5000)
	id := k.ChunkID(plain)
	other := k.ChunkID([]byte("something else"))
	sealed, err := k.Seal(nil, id, plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Open(nil, other, sealed); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open under another id: err = %v, want ErrCorrupt", err)
	}
	// A caller bug: sealed under an id that is not the content's. Authentication passes,
	// the final content check catches it.
	mis, err := k.Seal(nil, other, plain)
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.Open(nil, other, mis)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "content does not match its id") {
		t.Fatalf("content/id mismatch: err = %v, want ErrCorrupt naming the mismatch", err)
	}
}

func TestOpenWithAnotherVaultsKeys(t *testing.T) {
	a, b := DeriveKeys(testMaster(5)), DeriveKeys(testMaster(6))
	plain := randomBytes(7, 1000)
	id := a.ChunkID(plain)
	sealed, err := a.Seal(nil, id, plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(nil, id, sealed); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
}

func TestDifferentVaultsDifferentIDs(t *testing.T) {
	a, b := DeriveKeys(testMaster(5)), DeriveKeys(testMaster(6))
	for _, data := range [][]byte{{}, []byte("hello"), randomBytes(1, 1<<16)} {
		if a.ChunkID(data) == b.ChunkID(data) {
			t.Fatalf("two vaults gave the same id for %d bytes", len(data))
		}
		if a.ChunkID(data) != a.ChunkID(data) {
			t.Fatalf("ChunkID is not deterministic")
		}
	}
	if a.GearSeed() == b.GearSeed() {
		t.Fatalf("two vaults share a gear seed")
	}
}

// stdDerive is an independent HKDF-SHA-256 (standard library crypto/hkdf).
func stdDerive(t *testing.T, secret []byte, info string) []byte {
	t.Helper()
	k, err := hkdf.Key(sha256.New, secret, nil, info, 32)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestChunkIDMatchesStdlibHMAC(t *testing.T) {
	mk := testMaster(7)
	k := DeriveKeys(mk)
	idKey := stdDerive(t, mk[:], "coffer id v1")
	for _, n := range []int{0, 1, 55, 56, 63, 64, 65, 1000, 1 << 20} {
		data := randomBytes(uint64(n), n)
		m := hmac.New(sha256.New, idKey)
		m.Write(data)
		want, _ := chunk.FromBytes(m.Sum(nil))
		if got := k.ChunkID(data); got != want {
			t.Fatalf("%d bytes: ChunkID = %s, want %s", n, got, want)
		}
	}
	if got, want := k.GearSeed(), stdDerive(t, mk[:], "coffer gear v1"); !bytes.Equal(got[:], want) {
		t.Fatalf("GearSeed = %x, want %x", got, want)
	}
}

func TestChunkKeyMatchesHKDF(t *testing.T) {
	mk := testMaster(8)
	k := DeriveKeys(mk)
	dataKey := stdDerive(t, mk[:], "coffer data v1")
	for i := range 5 {
		id := k.ChunkID([]byte{byte(i)})
		want := stdDerive(t, dataKey, "coffer chunk v1"+string(id[:]))
		var got [KeySize]byte
		k.chunkKey(id, &got)
		if !bytes.Equal(got[:], want) {
			t.Fatalf("chunk key %d = %x, want %x", i, got, want)
		}
	}
}

func TestSealOpenInvalidArguments(t *testing.T) {
	k := DeriveKeys(testMaster(9))
	buf := make([]byte, 0, 1<<16)
	full := buf[:1<<16]
	plain := full[1000:2000]
	if _, err := k.Seal(buf, k.ChunkID(plain), plain); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Seal into buffer overlapping plain: err = %v, want ErrInvalid", err)
	}
	good := randomBytes(1, 500)
	id := k.ChunkID(good)
	sealed, err := k.Seal(nil, id, good)
	if err != nil {
		t.Fatal(err)
	}
	copy(full, sealed)
	if _, err := k.Open(buf, id, full[:len(sealed)]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Open into buffer overlapping sealed: err = %v, want ErrInvalid", err)
	}
	big := make([]byte, MaxPlaintextSize+1)
	if _, err := k.Seal(nil, chunk.ID{1}, big); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Seal of %d bytes: err = %v, want ErrInvalid", len(big), err)
	}
}

// TestOpenDecompressionBound: an authentic envelope whose zstd body expands beyond the
// bound (MaxPlaintextSize in production, 1 MiB here to keep the test fast) is refused, not
// decoded (a bound on memory).
func TestOpenDecompressionBound(t *testing.T) {
	const bound = 1 << 20
	k := DeriveKeys(testMaster(10))
	k.comp = newCompressor(bound)
	// rle returns a zstd frame of n RLE blocks of 128 KiB of zeros (4 bytes each): magic,
	// descriptor (no content size), window 128 KiB, blocks.
	rle := func(n int) []byte {
		z := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38}
		for i := range n {
			h := uint32(1<<1 | (128<<10)<<3)
			if i == n-1 {
				h |= 1 // last block
			}
			z = append(z, byte(h), byte(h>>8), byte(h>>16), 0)
		}
		return z
	}
	seal := func(id chunk.ID, z []byte) []byte {
		hdr := []byte{envMagic, envVersion, 0, 0, 0, 0, compZstd}
		hdr = append(hdr, make([]byte, nonceSize)...)
		aead, err := k.chunkAEAD(id)
		if err != nil {
			t.Fatal(err)
		}
		return aead.Seal(bytes.Clone(hdr), hdr[offNonce:], z, hdr)
	}
	// Exactly the bound decodes (and is then checked against its id).
	fits := make([]byte, bound)
	id := k.ChunkID(fits)
	if got, err := k.Open(nil, id, seal(id, rle(bound/(128<<10)))); err != nil || !bytes.Equal(got, fits) {
		t.Fatalf("frame of exactly the bound: %d bytes, err = %v", len(got), err)
	}
	// One block more is refused.
	id = chunk.ID{0xaa}
	_, err := k.Open(nil, id, seal(id, rle(bound/(128<<10)+1)))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "decompress") {
		t.Fatalf("err = %v, want ErrCorrupt naming decompress", err)
	}
}

func TestKeysStartNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	k := DeriveKeys(testMaster(11))
	p := textBytes(1, 300<<10)
	id := k.ChunkID(p)
	s, err := k.Seal(nil, id, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Open(nil, id, s); err != nil {
		t.Fatal(err)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Fatalf("goroutines %d -> %d after seal/open", before, after)
	}
}

func TestSealOpenConcurrent(t *testing.T) {
	k := DeriveKeys(testMaster(12))
	const workers, rounds = 8, 12
	text, random := textBytes(12, 72<<10), randomBytes(12, 64<<10)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			var sealBuf, openBuf []byte
			for i := range rounds {
				n := 1 + (w*7919+i*104729)%(64<<10)
				p := random[:n]
				if i%2 == 0 {
					p = text[w*1000 : w*1000+n]
				}
				id := k.ChunkID(p)
				s, err := k.Seal(sealBuf[:0], id, p)
				if err != nil {
					errs <- err
					return
				}
				sealBuf = s
				o, err := k.Open(openBuf[:0], id, s)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(o, p) {
					errs <- fmt.Errorf("worker %d round %d: round trip differs", w, i)
					return
				}
				openBuf = o
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestSealReusesDst(t *testing.T) {
	k := DeriveKeys(testMaster(13))
	for _, p := range [][]byte{textBytes(1, 256<<10), randomBytes(1, 256<<10)} {
		id := k.ChunkID(p)
		dst := make([]byte, 0, k.SealCap(len(p)))
		s, err := k.Seal(dst, id, p)
		if err != nil {
			t.Fatal(err)
		}
		if &s[0] != &dst[:1][0] {
			t.Fatalf("Seal reallocated a dst with room for the envelope")
		}
	}
}

func TestMasterKey(t *testing.T) {
	mk, err := NewMasterKey(rand.NewChaCha8([32]byte{1}))
	if err != nil {
		t.Fatal(err)
	}
	mk2, err := NewMasterKey(rand.NewChaCha8([32]byte{2}))
	if err != nil {
		t.Fatal(err)
	}
	if mk == mk2 || mk == (MasterKey{}) {
		t.Fatalf("NewMasterKey returned equal or zero keys")
	}
	for _, f := range []string{"%v", "%s", "%x", "%#v", "%+v"} {
		if s := fmt.Sprintf(f, mk); strings.Contains(s, fmt.Sprintf("%x", mk[:4])) || strings.Contains(s, fmt.Sprint(mk[0])+" ") {
			t.Fatalf("Sprintf(%q) leaks the key: %s", f, s)
		}
	}
	if _, err := NewMasterKey(bytes.NewReader(make([]byte, 10))); err == nil {
		t.Fatalf("short random source accepted")
	}
	if _, err := NewMasterKey(bytes.NewReader(make([]byte, 32))); err == nil {
		t.Fatalf("all-zero random source accepted")
	}
}
