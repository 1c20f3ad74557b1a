package pki_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// TestSignCSR: the CA signs a CSR's key with the given serial and role; the key stays
// with the requester and together they make a working identity.
func TestSignCSR(t *testing.T) {
	ca, err := pki.NewCA("c", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	csr, key, err := pki.NewKeyAndCSR("web01")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := pki.ParseCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := pki.NewSerial()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(pub, serial, pki.IssueRequest{CommonName: "web01", Role: transport.RoleAgent, Vaults: []string{"web01"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(ca.CertPEM(), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if id.Role() != transport.RoleAgent || pki.SerialString(id.Leaf().SerialNumber) != pki.SerialString(serial) {
		t.Fatalf("identity role %s serial %x", id.Role(), id.Leaf().SerialNumber)
	}
	if v := pki.VaultsOf(id.Leaf()); len(v) != 1 || v[0] != "web01" {
		t.Fatalf("vaults %v", v)
	}
	// A CSR whose signature does not verify is refused.
	bad := append([]byte(nil), csr...)
	bad[len(bad)-3] ^= 0xff
	if _, err := pki.ParseCSR(bad); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("tampered CSR: %v, want ErrInvalid", err)
	}
	if _, err := pki.ParseCSR([]byte("junk")); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("junk CSR: %v", err)
	}
}

func TestParseSerial(t *testing.T) {
	for in, want := range map[string]string{"0A:1b": "a1b", "0x00ff": "ff", " 7 ": "7"} {
		if got, err := pki.ParseSerial(in); err != nil || got != want {
			t.Errorf("ParseSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "xyz", "0", "-5"} {
		if _, err := pki.ParseSerial(in); !errors.Is(err, pki.ErrInvalid) {
			t.Errorf("ParseSerial(%q): %v, want ErrInvalid", in, err)
		}
	}
}
