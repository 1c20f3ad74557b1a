package crypt

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestKeyCacheRoundTrip(t *testing.T) {
	mk := testMaster(30)
	pass, secret := []byte("correct horse"), []byte("host secret bytes")
	w0 := bytes.Repeat([]byte{7}, WrappedKeySize)
	w1 := bytes.Repeat([]byte{8}, WrappedKeySize)
	e, err := SealKeyCache(mk, "v1", w1, pass, secret, rand.NewChaCha8([32]byte{1}))
	if err != nil {
		t.Fatal(err)
	}
	if len(e) != KeyCacheEntrySize {
		t.Fatalf("entry is %d bytes, want %d", len(e), KeyCacheEntrySize)
	}
	if bytes.Contains(e, mk[:8]) {
		t.Fatal("entry contains the key")
	}
	got, idx, err := OpenKeyCache(e, "v1", [][]byte{w0, w1}, pass, secret)
	if err != nil {
		t.Fatal(err)
	}
	if got != mk || idx != 1 {
		t.Fatalf("opened key %x at wrapping %d, want the sealed key at 1", got[:4], idx)
	}
	e2, err := SealKeyCache(mk, "v1", w1, pass, secret, rand.NewChaCha8([32]byte{2}))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(e[cOffSalt:cOffCT], e2[cOffSalt:cOffCT]) {
		t.Fatal("two entries share salt and nonce")
	}
}

// TestKeyCacheRefuses checks every way an entry must not open: another passphrase,
// another host secret, another vault, a wrapping the vault no longer holds, altered
// bytes and malformed entries.
func TestKeyCacheRefuses(t *testing.T) {
	mk := testMaster(31)
	pass, secret := []byte("correct horse"), []byte("host secret bytes")
	w := bytes.Repeat([]byte{9}, WrappedKeySize)
	wraps := [][]byte{w}
	e, err := SealKeyCache(mk, "v1", w, pass, secret, rand.NewChaCha8([32]byte{3}))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		c := bytes.Clone(e)
		c[i] ^= 1
		return c
	}
	cases := []struct {
		name         string
		entry        []byte
		vault        string
		wraps        [][]byte
		pass, secret []byte
		want         error
	}{
		{"other passphrase", e, "v1", wraps, []byte("correct horsf"), secret, ErrWrongPassphrase},
		{"other secret", e, "v1", wraps, pass, []byte("host secret byteS"), ErrWrongPassphrase},
		{"other vault", e, "v2", wraps, pass, secret, ErrWrongPassphrase},
		{"wrapping removed", e, "v1", [][]byte{bytes.Repeat([]byte{10}, WrappedKeySize)}, pass, secret, ErrStale},
		{"no wrappings", e, "v1", nil, pass, secret, ErrStale},
		{"salt altered", flip(cOffSalt), "v1", wraps, pass, secret, ErrWrongPassphrase},
		{"nonce altered", flip(cOffNonce), "v1", wraps, pass, secret, ErrWrongPassphrase},
		{"ciphertext altered", flip(cOffCT + 3), "v1", wraps, pass, secret, ErrWrongPassphrase},
		{"tag altered", flip(len(e) - 1), "v1", wraps, pass, secret, ErrWrongPassphrase},
		{"wrapping hash altered", flip(cOffWrap), "v1", wraps, pass, secret, ErrStale},
		{"truncated", e[:len(e)-1], "v1", wraps, pass, secret, ErrInvalid},
		{"bad magic", flip(0), "v1", wraps, pass, secret, ErrInvalid},
		{"unknown version", flip(cOffVersion), "v1", wraps, pass, secret, ErrInvalid},
		{"empty passphrase", e, "v1", wraps, nil, secret, ErrInvalid},
		{"empty secret", e, "v1", wraps, pass, nil, ErrInvalid},
		{"empty vault", e, "", wraps, pass, secret, ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, idx, err := OpenKeyCache(c.entry, c.vault, c.wraps, c.pass, c.secret)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if got != (MasterKey{}) || idx != -1 {
				t.Fatalf("a refused entry returned key %x, index %d", got[:4], idx)
			}
		})
	}
	if _, err := SealKeyCache(mk, "v1", nil, pass, secret, rand.NewChaCha8([32]byte{4})); !errors.Is(err, ErrInvalid) {
		t.Errorf("seal without a wrapping: %v", err)
	}
	if _, err := SealKeyCache(mk, "v1", w, pass, nil, rand.NewChaCha8([32]byte{4})); !errors.Is(err, ErrInvalid) {
		t.Errorf("seal without a secret: %v", err)
	}
}

func TestKeyCacheArgon2ParamsValid(t *testing.T) {
	p := KeyCacheArgon2Params()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
	if p.MemoryKiB < 19<<10 || p.Time < 2 {
		t.Errorf("key cache cost %+v is below OWASP's minimum", p)
	}
}
