package meta

import (
	"errors"
	"testing"
	"time"
)

func TestIssuedCertState(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	c := IssuedCert{Serial: "ab", Principal: "web01", Role: CertRoleAgent, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		How: IssuedByEnroll}
	if s := c.State(now, nil); s != CertValid {
		t.Fatalf("state %s", s)
	}
	if s := c.State(c.NotAfter.Add(-29*24*time.Hour), nil); s != CertExpiring {
		t.Fatalf("29 days before expiry: %s", s)
	}
	if s := c.State(c.NotAfter, nil); s != CertExpired {
		t.Fatalf("at expiry: %s", s)
	}
	if s := c.State(now, []Revocation{{Serial: "ab"}}); s != CertRevoked {
		t.Fatalf("revoked by serial: %s", s)
	}
	if s := c.State(now, []Revocation{{Principal: "web01", At: now}}); s != CertRevoked {
		t.Fatalf("revoked by principal: %s", s)
	}
	if err := ValidateIssuedCert(c); err != nil {
		t.Fatal(err)
	}
	bad := c
	bad.NotAfter = bad.NotBefore
	if err := ValidateIssuedCert(bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty lifetime accepted: %v", err)
	}
}

func TestConsumeNodeTokenFixesRoleAndID(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	tok := EnrollToken{ID: "0123456789abcdef", Name: "chunk-7", Kind: TokenKindNode, Role: NodeRoleChunk, Expires: now.Add(time.Hour)}
	if err := ConsumeNodeToken(tok, "chunk-7", "", now); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		t        EnrollToken
		id, role string
	}{
		"meta role asked":  {tok, "chunk-7", NodeRoleMeta},
		"another ID":       {tok, "chunk-8", ""},
		"used":             {func() EnrollToken { u := tok; u.Used = true; return u }(), "chunk-7", ""},
		"expired":          {tok, "chunk-7", ""},
		"an agent's token": {func() EnrollToken { a := tok; a.Kind = ""; return a }(), "chunk-7", ""},
	} {
		at := now
		if name == "expired" {
			at = tok.Expires
		}
		if err := ConsumeNodeToken(tc.t, tc.id, tc.role, at); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v, want ErrDenied", name, err)
		}
	}
	if _, err := ConsumeEnrollToken(tok, "", now); !errors.Is(err, ErrDenied) {
		t.Fatalf("a node token enrolled an agent: %v", err)
	}
}
