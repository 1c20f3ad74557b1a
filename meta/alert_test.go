package meta

import (
	"testing"
	"time"
)

// TestCertExpiryAlerts: every issued certificate within the warning of its end raises an
// alert keyed by its serial, critical in the last week; a revoked one, one renewed, one
// superseded by a later certificate of the same principal and role, an expired one and
// one far from its end do not.
func TestCertExpiryAlerts(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	cert := func(serial, principal, role string, left time.Duration) IssuedCert {
		return IssuedCert{Serial: serial, Principal: principal, Role: role, NotBefore: now.Add(-300 * day), NotAfter: now.Add(left),
			How: IssuedByAdmin, By: "ops", At: now.Add(-300 * day)}
	}
	renewal := cert("b2", "db01", CertRoleAgent, 365*day)
	renewal.Renews = "b1"
	certs := []IssuedCert{
		cert("a1", "web01", CertRoleAgent, 20*day), // alert, warning
		cert("c1", "n3", CertRoleNode, 3*day),      // alert, critical
		cert("b1", "db01", CertRoleAgent, 10*day),  // renewed by b2
		renewal,                                     // far from its end
		cert("d1", "old", CertRoleAgent, 10*day),    // superseded by d2
		cert("d2", "old", CertRoleAgent, 200*day),   // far
		cert("e1", "gone", CertRoleAgent, 5*day),    // revoked
		cert("f1", "late", CertRoleAgent, -1*day),   // expired
		cert("g1", "web01", CertRoleAdmin, 100*day), // same principal, other role: no effect
	}
	revs := []Revocation{{Seq: 1, Serial: "e1", At: now.Add(-day), By: "ops"}}
	got := map[string]Alert{}
	for _, a := range CertExpiryAlerts(certs, revs, now) {
		got[a.Key] = a
	}
	if len(got) != 2 {
		t.Fatalf("alerts %v, want a1 and c1", got)
	}
	if a := got["cert-expiry/a1"]; a.Severity != SeverityWarning || a.Subject != "web01" || a.Kind != AlertCertExpiry || a.Details["role"] != CertRoleAgent {
		t.Errorf("a1: %+v", a)
	}
	if a := got["cert-expiry/c1"]; a.Severity != SeverityCritical || a.Subject != "n3" {
		t.Errorf("c1: %+v", a)
	}
	for _, a := range got {
		if err := ValidateAlert(a); err != nil {
			t.Errorf("alert %s does not validate: %v", a.Key, err)
		}
	}
}
