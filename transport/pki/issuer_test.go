package pki_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// newIssuer makes a root and an issuer for meta server id whose key was generated
// apart from the root (as on a meta host).
func newIssuer(t *testing.T, root *pki.CA, id string, now time.Time) *pki.CA {
	t.Helper()
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := root.SignIssuer(key.Public(), id, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := pki.LoadIssuer(root.CertPEM(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// TestIssuerChain: a leaf signed by a meta server's issuer carries the issuer's
// certificate and verifies against the root alone; the issuer cannot sign another
// issuer, and a leaf cannot act as a CA (path length 0).
func TestIssuerChain(t *testing.T) {
	now := time.Now()
	root, err := pki.NewCA("root", now)
	if err != nil {
		t.Fatal(err)
	}
	iss := newIssuer(t, root, "meta-1", now)
	if !iss.IsIssuer() || root.IsIssuer() {
		t.Fatal("IsIssuer wrong")
	}
	if string(iss.RootPEM()) != string(root.CertPEM()) {
		t.Fatal("issuer's RootPEM is not the root")
	}
	if iss.Certificate().MaxPathLen != 0 || !iss.Certificate().MaxPathLenZero {
		t.Fatalf("issuer path length %d, want 0", iss.Certificate().MaxPathLen)
	}
	cert, key, err := iss.Issue(pki.IssueRequest{CommonName: "chunk-1", Role: transport.RoleNode}, now)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for rest := cert; ; n++ {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
	}
	if n != 2 {
		t.Fatalf("issued PEM holds %d certificates, want leaf + issuer", n)
	}
	id, err := pki.NewIdentity(root.CertPEM(), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.Certificate())
	inter := x509.NewCertPool()
	inter.AddCert(iss.Certificate())
	if _, err := id.Leaf().Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not verify against the root: %v", err)
	}
	k2, _, _ := pki.NewKey()
	if _, err := iss.SignIssuer(k2.Public(), "meta-2", 0, now); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("issuer signed an issuer: %v", err)
	}
	// Another root's issuer does not load under this root.
	other, _ := pki.NewCA("other", now)
	k3, k3PEM, _ := pki.NewKey()
	otherIss, _ := other.SignIssuer(k3.Public(), "meta-x", 0, now)
	if _, err := pki.LoadIssuer(root.CertPEM(), otherIss, k3PEM); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("issuer of another root loaded: %v", err)
	}
	// The root itself is not an issuer.
	if _, err := pki.LoadIssuer(root.CertPEM(), root.CertPEM(), root.KeyPEM()); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("root loaded as an issuer: %v", err)
	}
	// A CSR's name is reported so that a signer can refuse another principal's request.
	csrDER, _, err := pki.NewKeyAndCSR("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, cn, err := pki.ParseCSRName(csrDER); err != nil || cn != "alice" {
		t.Fatalf("ParseCSRName = %q, %v", cn, err)
	}
	info, err := pki.ParseCertInfo(cert)
	if err != nil || info.Principal != "chunk-1" || info.Role != "node" || info.Issuer != pki.IssuerName("meta-1") || info.NotAfter.IsZero() {
		t.Fatalf("ParseCertInfo = %+v, %v", info, err)
	}
}

// FuzzCSRFromPEM: CSR files come from disk (operators copy them between hosts).
func FuzzCSRFromPEM(f *testing.F) {
	k, _, _ := pki.NewKey()
	csr, _ := pki.NewCSR(k, "x")
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		der, err := pki.CSRFromPEM(data)
		if err != nil {
			if !errors.Is(err, pki.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if _, _, err := pki.ParseCSRName(der); err != nil && !errors.Is(err, pki.ErrInvalid) {
			t.Fatalf("error does not wrap ErrInvalid: %v", err)
		}
	})
}
