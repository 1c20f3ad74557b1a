package pki

import (
	"errors"
	"fmt"
	"os"
	"slices"
)

// InstallRenewed checks a renewed certificate (certPEM, for the new key keyPEM) against
// the identity it renews (same principal, role and vault scope, issued under caPEM) and
// then replaces certFile and keyFile, keeping the old files with the suffix ".old". It
// returns the new certificate's description. Nothing is written when a check fails.
func InstallRenewed(caPEM, certPEM, keyPEM []byte, old *Identity, certFile, keyFile string) (CertInfo, error) {
	id, err := NewIdentity(caPEM, certPEM, keyPEM)
	if err != nil {
		return CertInfo{}, fmt.Errorf("pki: renew: the new certificate does not fit the new key: %w", err)
	}
	if err := id.checkIssued(); err != nil {
		return CertInfo{}, fmt.Errorf("pki: renew: %w", err)
	}
	if id.Principal() != old.Principal() || id.Role() != old.Role() || !slices.Equal(VaultsOf(id.Leaf()), VaultsOf(old.Leaf())) {
		return CertInfo{}, fmt.Errorf("pki: renew: %w: the new certificate is %s %q %v, the old one %s %q %v",
			ErrInvalid, id.Role(), id.Principal(), VaultsOf(id.Leaf()), old.Role(), old.Principal(), VaultsOf(old.Leaf()))
	}
	for _, f := range []string{certFile, keyFile} {
		if err := os.Rename(f, f+".old"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return CertInfo{}, fmt.Errorf("pki: renew: keep the old file: %w", err)
		}
	}
	if err := WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return CertInfo{}, fmt.Errorf("pki: renew: %w", err)
	}
	if err := WriteFile(certFile, certPEM, 0o644); err != nil {
		return CertInfo{}, fmt.Errorf("pki: renew: %w", err)
	}
	return ParseCertInfo(certPEM)
}
