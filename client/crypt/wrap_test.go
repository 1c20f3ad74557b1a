package crypt

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestWrapUnwrap(t *testing.T) {
	mk := testMaster(20)
	pass := []byte("correct horse battery staple")
	w, err := WrapKey(mk, pass, TestArgon2Params(), rand.NewChaCha8([32]byte{1}))
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != WrappedKeySize {
		t.Fatalf("wrapping is %d bytes, want %d", len(w), WrappedKeySize)
	}
	if bytes.Contains(w, mk[:8]) {
		t.Fatalf("wrapping contains the key")
	}
	got, err := UnwrapKey(w, pass)
	if err != nil {
		t.Fatal(err)
	}
	if got != mk {
		t.Fatalf("unwrapped a different key")
	}
	w2, err := WrapKey(mk, pass, TestArgon2Params(), rand.NewChaCha8([32]byte{2}))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(w[wOffSalt:wOffCT], w2[wOffSalt:wOffCT]) {
		t.Fatalf("two wrappings share salt and nonce")
	}
}

func TestUnwrapWrongPassphrase(t *testing.T) {
	mk := testMaster(21)
	w, err := WrapKey(mk, []byte("right"), TestArgon2Params(), rand.NewChaCha8([32]byte{3}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"wrong", "righ", "right ", "Right"} {
		if _, err := UnwrapKey(w, []byte(p)); !errors.Is(err, ErrWrongPassphrase) {
			t.Fatalf("passphrase %q: err = %v, want ErrWrongPassphrase", p, err)
		}
	}
	// Changed salt, nonce, ciphertext or tag: the same answer (indistinguishable).
	for _, i := range []int{wOffSalt, wOffNonce, wOffCT, wrapSize - 1} {
		bad := bytes.Clone(w)
		bad[i] ^= 1
		if _, err := UnwrapKey(bad, []byte("right")); !errors.Is(err, ErrWrongPassphrase) {
			t.Fatalf("byte %d changed: err = %v, want ErrWrongPassphrase", i, err)
		}
	}
}

func TestUnwrapMalformed(t *testing.T) {
	pass := []byte("pw")
	w, err := WrapKey(testMaster(22), pass, TestArgon2Params(), rand.NewChaCha8([32]byte{4}))
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(w) {
		if _, err := UnwrapKey(w[:n], pass); !errors.Is(err, ErrInvalid) {
			t.Fatalf("truncated to %d: err = %v, want ErrInvalid", n, err)
		}
	}
	if _, err := UnwrapKey(append(bytes.Clone(w), 0), pass); !errors.Is(err, ErrInvalid) {
		t.Fatalf("extended: err = %v, want ErrInvalid", err)
	}
	cases := []struct {
		name string
		edit func(b []byte)
		want string
	}{
		{"magic", func(b []byte) { b[0] = 'X' }, "magic"},
		{"version", func(b []byte) { b[wOffVersion] = 9 }, "version 9"},
		{"kdf", func(b []byte) { b[wOffKDF] = 2 }, "key derivation 2"},
		{"time zero", func(b []byte) { b[wOffTime+3] = 0 }, "argon2 time 0"},
		{"huge time", func(b []byte) { b[wOffTime] = 0xff }, "argon2 time"},
		{"huge memory", func(b []byte) { b[wOffMemory] = 0xff }, "argon2 memory"},
		{"zero threads", func(b []byte) { b[wOffThreads] = 0 }, "threads"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(w)
			tc.edit(b)
			_, err := UnwrapKey(b, pass)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid naming %q", err, tc.want)
			}
		})
	}
}

func TestWrapInvalidArguments(t *testing.T) {
	mk := testMaster(23)
	r := rand.NewChaCha8([32]byte{5})
	if _, err := WrapKey(mk, nil, TestArgon2Params(), r); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty passphrase: err = %v, want ErrInvalid", err)
	}
	if _, err := UnwrapKey(make([]byte, WrappedKeySize), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unwrap with empty passphrase: err = %v, want ErrInvalid", err)
	}
	for _, p := range []Argon2Params{{}, {Time: 1, MemoryKiB: 7, Threads: 1}, {Time: 1, MemoryKiB: 64, Threads: 0},
		{Time: MaxArgon2Time + 1, MemoryKiB: 64, Threads: 1}, {Time: 1, MemoryKiB: MaxArgon2MemoryKiB + 1, Threads: 1}} {
		if _, err := WrapKey(mk, []byte("pw"), p, r); !errors.Is(err, ErrInvalid) {
			t.Fatalf("params %+v: err = %v, want ErrInvalid", p, err)
		}
	}
	if _, err := WrapKey(mk, []byte("pw"), TestArgon2Params(), io.LimitReader(r, 5)); err == nil {
		t.Fatalf("failing random source accepted")
	}
}

func TestArgon2ParamsDefaults(t *testing.T) {
	d := DefaultArgon2Params()
	if d != (Argon2Params{Time: 3, MemoryKiB: 64 << 10, Threads: 4}) {
		t.Fatalf("DefaultArgon2Params = %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := TestArgon2Params().Validate(); err != nil {
		t.Fatal(err)
	}
	if TestArgon2Params().MemoryKiB >= d.MemoryKiB {
		t.Fatalf("test params are not cheaper than the defaults")
	}
}

func FuzzUnwrapKey(f *testing.F) {
	w, err := WrapKey(testMaster(24), []byte("pw"), TestArgon2Params(), rand.NewChaCha8([32]byte{6}))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(w, []byte("pw"))
	f.Add(w[:40], []byte("pw"))
	f.Add([]byte("CFKW"), []byte("x"))
	f.Fuzz(func(t *testing.T, wrapped, pass []byte) {
		// Keep the fuzzer from asking Argon2 for gigabytes.
		if len(wrapped) == wrapSize && (wrapped[wOffMemory] != 0 || wrapped[wOffMemory+1] != 0 || wrapped[wOffTime] != 0 || wrapped[wOffTime+1] != 0 || wrapped[wOffTime+2] != 0) {
			return
		}
		_, err := UnwrapKey(wrapped, pass)
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrWrongPassphrase) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}
