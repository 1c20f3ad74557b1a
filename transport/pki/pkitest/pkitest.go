// Package pkitest issues throw-away cluster CAs and certificates for tests of the
// transports and their users.
package pkitest

import (
	"testing"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// NewCA returns a fresh cluster CA named "test-cluster"; it fails the test on error.
func NewCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test-cluster", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// Identity issues a certificate for name with role from ca and returns it as an identity.
func Identity(t testing.TB, ca *pki.CA, name string, role transport.Role) *pki.Identity {
	t.Helper()
	return IdentityFor(t, ca, pki.IssueRequest{CommonName: name, Role: role})
}

// IdentityFor issues the certificate req asks for (a vault scope, say) from ca and
// returns it as an identity.
func IdentityFor(t testing.TB, ca *pki.CA, req pki.IssueRequest) *pki.Identity {
	t.Helper()
	cert, key, err := ca.Issue(req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(ca.CertPEM(), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
