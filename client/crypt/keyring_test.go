package crypt

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

func sealOne(t *testing.T, k *Keys, plain []byte) (chunk.ID, []byte) {
	t.Helper()
	id := k.ChunkID(plain)
	s, err := k.Seal(nil, id, plain)
	if err != nil {
		t.Fatal(err)
	}
	return id, s
}

// TestKeyringEpochs: rotation keeps chunk IDs and the gear seed (dedup), seals new chunks
// under the new epoch in a version-2 envelope, and every earlier epoch stays readable.
func TestKeyringEpochs(t *testing.T) {
	r0 := NewKeyring("v", testMaster(1))
	k0 := r0.Keys()
	legacy := DeriveKeys(testMaster(1))
	plain := textBytes(3, 5000)
	id0, s0 := sealOne(t, k0, plain)
	_, sl := sealOne(t, legacy, plain)
	if !bytes.Equal(s0, sl) || s0[offVersion] != envVersion {
		t.Fatalf("epoch 0 of a keyring must seal as DeriveKeys does (version 1); version %d", s0[offVersion])
	}
	r1, err := r0.Rotate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := r1.Rotate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if r0.Epoch() != 0 || r1.Epoch() != 1 || r2.Epoch() != 2 || len(r1.Epochs) != 1 {
		t.Fatalf("epochs %d %d %d; rotate must not change its receiver", r0.Epoch(), r1.Epoch(), r2.Epoch())
	}
	k1, k2 := r1.Keys(), r2.Keys()
	if k2.ChunkID(plain) != id0 || k2.GearSeed() != k0.GearSeed() {
		t.Fatal("rotation changed chunk IDs or the gear seed")
	}
	_, s1 := sealOne(t, k1, plain)
	_, s2 := sealOne(t, k2, plain)
	if s1[offVersion] != envVersionEpoch || s1[offGen+3] != 1 || s2[offGen+3] != 2 || bytes.Equal(s1, s2) {
		t.Fatalf("envelopes: version %d gen %d / gen %d", s1[offVersion], s1[offGen+3], s2[offGen+3])
	}
	for i, s := range [][]byte{s0, s1, s2} {
		out, err := k2.Open(nil, id0, s)
		if err != nil || !bytes.Equal(out, plain) {
			t.Fatalf("epoch %d with the newest keys: %v", i, err)
		}
	}
	// Keys of an older keyring do not hold the newer epochs' keys.
	for _, k := range []*Keys{k0, k1, legacy} {
		if _, err := k.Open(nil, id0, s2); !errors.Is(err, ErrNoEpochKey) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "epoch 2") {
			t.Fatalf("older keys opening epoch 2: %v", err)
		}
	}
	// A version-1 header naming an epoch, or a version-2 header naming generation 0, is
	// corrupt (the header is authenticated anyway).
	bad := bytes.Clone(s1)
	bad[offVersion] = envVersion
	if _, err := k2.Open(nil, id0, bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version 1 with epoch 1: %v", err)
	}
	bad = bytes.Clone(s0)
	bad[offVersion] = envVersionEpoch
	if _, err := k2.Open(nil, id0, bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version 2 with generation 0: %v", err)
	}
}

// TestRevokedHolderCannotOpenLaterEpoch is the crypt-level revocation test: a holder
// that kept its whole keyring (master key included) from before its wrap was removed
// cannot open a chunk sealed after the rotation that followed, even one with content it
// knows the ID of, while the remaining holders can.
func TestRevokedHolderCannotOpenLaterEpoch(t *testing.T) {
	host, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := NewKeyring("v", testMaster(5)).Rotate(rand.Reader)
	hostWrap, err := SealKeyring(r1, host.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := OpenKeyring(hostWrap, "v", host) // what the host holds when revoked
	if err != nil {
		t.Fatal(err)
	}
	// Revocation: the host's wrap goes, a new epoch is sealed to the others only.
	r2, _ := r1.Rotate(rand.Reader)
	otherWrap, err := SealKeyring(r2, other.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKeyring(otherWrap, "v", host); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("the revoked host opening the others' new wrap: %v", err)
	}
	plain := randomBytes(7, 3000)
	id, after := sealOne(t, r2.Keys(), plain)
	if _, err := stolen.Keys().Open(nil, id, after); !errors.Is(err, ErrNoEpochKey) {
		t.Fatalf("revoked host opening a chunk written after revocation: %v", err)
	}
	// Nor from the master key alone: epoch keys are random, not derived.
	if _, err := DeriveKeys(stolen.Master).Open(nil, id, after); !errors.Is(err, ErrNoEpochKey) {
		t.Fatalf("master key alone: %v", err)
	}
	kept, err := OpenKeyring(otherWrap, "v", other)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := kept.Keys().Open(nil, id, after); err != nil || !bytes.Equal(out, plain) {
		t.Fatalf("remaining holder: %v", err)
	}
	_, before := sealOne(t, r1.Keys(), plain)
	if out, err := stolen.Keys().Open(nil, id, before); err != nil || !bytes.Equal(out, plain) {
		t.Fatalf("the revoked host still opens what was sealed before (documented): %v", err)
	}
}

func TestKeyringRoundTripAndErrors(t *testing.T) {
	r, _ := NewKeyring("vault-a", testMaster(9)).Rotate(rand.Reader)
	r, _ = r.Rotate(rand.Reader)
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseKeyring(b, "vault-a")
	if err != nil || got.Master != r.Master || len(got.Epochs) != 2 || got.Epochs[1] != r.Epochs[1] {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParseKeyring(b, "vault-b"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "vault-a") {
		t.Fatalf("another vault's keyring: %v", err)
	}
	for name, mut := range map[string]func([]byte) []byte{
		"truncated": func(b []byte) []byte { return b[:len(b)-1] },
		"trailing":  func(b []byte) []byte { return append(b, 0) },
		"magic":     func(b []byte) []byte { b[0] = 'X'; return b },
		"version":   func(b []byte) []byte { b[4] = 9; return b },
		"epoch gap": func(b []byte) []byte { b[len(b)-KeySize-1] = 3; return b },
	} {
		if _, err := ParseKeyring(mut(bytes.Clone(b)), "vault-a"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if s := r.Epochs[0].String() + r.Master.String(); strings.Contains(s, string(r.Epochs[0].Key[:4])) || !strings.Contains(s, "redacted") {
		t.Errorf("key material printed: %s", s)
	}
}

func TestIdentityPassphrase(t *testing.T) {
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	blob, hk, err := SealIdentity(id, []byte("pw one"), TestArgon2Params(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	got, hk2, err := OpenIdentity(blob, []byte("pw one"))
	if err != nil || got.Recipient() != id.Recipient() || hk2 != hk {
		t.Fatalf("open: %v", err)
	}
	if _, _, err := OpenIdentity(blob, []byte("pw two")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if got, err := OpenIdentityKey(blob, hk); err != nil || got.Recipient() != id.Recipient() {
		t.Fatalf("open with the holder key: %v", err)
	}
	if _, err := OpenIdentityKey(blob, testMaster(1)); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("another holder key: %v", err)
	}
	if _, _, err := OpenIdentity(blob[:20], []byte("pw one")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("truncated: %v", err)
	}
	text, _ := id.MarshalText()
	back, err := ParseIdentity(text)
	if err != nil || back.Recipient() != id.Recipient() {
		t.Fatalf("identity file round trip: %v", err)
	}
	if strings.Contains(id.String(), "SECRET") || strings.Contains(id.GoString(), "SECRET") {
		t.Fatal("String shows the private key")
	}
	if _, err := ParseIdentity(append(bytes.Clone(text), text...)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("two keys: %v", err)
	}
	if err := ValidateRecipient(id.Recipient()); err != nil {
		t.Fatal(err)
	}
	if err := ValidateRecipient("age1nope"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad recipient: %v", err)
	}
}
