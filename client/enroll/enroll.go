// Package enroll turns a one-time enrollment token into a backup-agent identity: it
// generates the agent's private key locally (it never leaves the host), sends a
// certificate signing request with the token to a meta server over the enrollment
// protocol (TLS without a client certificate, the server verified against the cluster
// CA), and writes the certificate, the key and a client configuration file.
package enroll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
)

// File names written by Write, inside the output directory.
const (
	CAFile     = "ca.pem"
	CertFile   = "agent.pem"
	KeyFile    = "agent-key.pem"
	ConfigFile = "coffer.yaml"
)

// Request is one enrollment.
type Request struct {
	CA    []byte   // PEM of the cluster CA (the servers are verified against it)
	Meta  []string // meta server addresses (host:port); any one is enough
	Token string   // the one-time token from `coffer admin enroll-token create`
	// Name, when set, is the agent name this host expects: the enrollment is refused
	// if the token names another. The token fixes the name either way.
	Name   string
	Logger *slog.Logger // nil discards
}

// Result is a new agent identity.
type Result struct {
	CA, Cert, Key []byte // PEM; Key is the private key generated here
	Vault         meta.VaultID
	Principal     string
	Serial        string
}

// Enroll runs one enrollment. Refusals by the cluster (used, expired or unknown token)
// wrap meta.ErrDenied; a server without the CA key meta.ErrUnavailable. The returned
// certificate is checked to be issued by req.CA for the generated key.
func Enroll(ctx context.Context, req Request) (Result, error) {
	if req.Token == "" {
		return Result{}, fmt.Errorf("enroll: %w: no token", meta.ErrInvalid)
	}
	if len(req.Meta) == 0 {
		return Result{}, fmt.Errorf("enroll: %w: no meta server addresses", meta.ErrInvalid)
	}
	if req.Name != "" {
		if err := meta.ValidateAgentName(req.Name); err != nil {
			return Result{}, fmt.Errorf("enroll: %w", err)
		}
	}
	if req.Logger == nil {
		req.Logger = slog.New(slog.DiscardHandler)
	}
	anon, err := pki.NewAnonymousIdentity(req.CA)
	if err != nil {
		return Result{}, fmt.Errorf("enroll: %w", err)
	}
	ep, err := cquic.New(cquic.Config{Identity: anon, Logger: req.Logger})
	if err != nil {
		return Result{}, fmt.Errorf("enroll: %w", err)
	}
	defer ep.Close()
	cn := req.Name
	if cn == "" {
		cn = "enrolling-agent" // the server names the certificate; this is only the CSR's
	}
	csr, key, err := pki.NewKeyAndCSR(cn)
	if err != nil {
		return Result{}, fmt.Errorf("enroll: %w", err)
	}
	res, err := metarpc.NewClient(ep, req.Meta).Enroll(ctx, meta.EnrollRequest{Token: req.Token, CSR: csr, Name: req.Name})
	if err != nil {
		return Result{}, fmt.Errorf("enroll: %w", err)
	}
	id, err := pki.NewIdentity(req.CA, res.Cert, key)
	if err != nil {
		return Result{}, fmt.Errorf("enroll: the returned certificate does not fit the generated key: %w", err)
	}
	if pki.SerialString(id.Leaf().SerialNumber) != res.Serial || id.Principal() != res.Principal {
		return Result{}, fmt.Errorf("enroll: the returned certificate (serial %x, %q) is not the one reported (%s, %q)",
			id.Leaf().SerialNumber, id.Principal(), res.Serial, res.Principal)
	}
	return Result{CA: req.CA, Cert: res.Cert, Key: key, Vault: res.Vault, Principal: res.Principal, Serial: res.Serial}, nil
}

// Write stores r in dir (created 0700 if needed): the CA, certificate and key (0600) and
// a coffer.yaml naming them, the meta servers and the vault. It refuses to overwrite an
// existing key. It returns the configuration file's path, after checking that the files
// load as an identity issued by the CA.
func Write(dir string, metaAddrs []string, r Result) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("enroll: %w", err)
	}
	keyPath := filepath.Join(dir, KeyFile)
	if _, err := os.Stat(keyPath); err == nil {
		return "", fmt.Errorf("enroll: %s exists: %w (choose another --out directory)", keyPath, os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("enroll: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{CAFile, r.CA}, {CertFile, r.Cert}, {KeyFile, r.Key}} {
		if err := pki.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return "", fmt.Errorf("enroll: %w", err)
		}
	}
	if _, err := pki.LoadIdentity(filepath.Join(dir, CAFile), filepath.Join(dir, CertFile), keyPath); err != nil {
		return "", fmt.Errorf("enroll: %w", err)
	}
	path := filepath.Join(dir, ConfigFile)
	if err := clientconfig.Save(path, clientconfig.File{Meta: metaAddrs, CA: CAFile, Cert: CertFile, Key: KeyFile, Vault: string(r.Vault)}); err != nil {
		return "", fmt.Errorf("enroll: %w", err)
	}
	return path, nil
}
