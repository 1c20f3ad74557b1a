// Package clientconfig reads and writes the agent's connection file (coffer.yaml): where
// the cluster is and which certificate to present. `cofferd dev` writes one; `coffer
// --config FILE` and COFFER_CONFIG read it.
//
// Example:
//
//	meta: ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
//	ca: pki/ca.pem
//	cert: pki/client.pem
//	key: pki/client-key.pem
//	vault: default
//
// Relative paths are resolved against the file's directory.
package clientconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// File is the on-disk client configuration.
type File struct {
	// Meta lists meta node RPC addresses (host:port); any one is enough, followers forward.
	Meta []string `yaml:"meta"`
	// CA, Cert and Key are PEM files: the cluster CA and this client's certificate/key.
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Vault is the default vault for commands that take --vault.
	Vault string `yaml:"vault,omitempty"`
	// HostKey, optional, is this host's own key pair (an age X25519 identity file,
	// written at enrollment): it opens the vault's host wrap, so the host needs no
	// passphrase (coffer vault keys add-host).
	HostKey string `yaml:"host_key,omitempty"`
	// KMSPlugins maps KMS plugin names (as a vault's kms wraps record them) to
	// executables; a name not listed runs "coffer-kms-NAME" from PATH (client/kms).
	KMSPlugins map[string]string `yaml:"kms_plugins,omitempty"`
	// KMSTransitMount is the mount path of the Vault Transit engine the built-in
	// "vault-transit" KMS client uses (default "transit"; the address and token come
	// from VAULT_ADDR and VAULT_TOKEN).
	KMSTransitMount string `yaml:"kms_transit_mount,omitempty"`
}

// ErrInvalid marks a configuration that cannot be used.
var ErrInvalid = errors.New("clientconfig: invalid")

// Load reads path and resolves relative file paths against its directory.
func Load(path string) (File, error) {
	var f File
	b, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("clientconfig: %w", err)
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("clientconfig: %s: %w: %v", path, ErrInvalid, err)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&f.CA, &f.Cert, &f.Key, &f.HostKey} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for name, p := range f.KMSPlugins {
		if p != "" && !filepath.IsAbs(p) {
			f.KMSPlugins[name] = filepath.Join(dir, p)
		}
	}
	if err := f.Validate(); err != nil {
		return f, fmt.Errorf("clientconfig: %s: %w", path, err)
	}
	return f, nil
}

// Validate reports the first missing field.
func (f File) Validate() error {
	switch {
	case len(f.Meta) == 0:
		return fmt.Errorf("%w: no meta addresses", ErrInvalid)
	case f.CA == "":
		return fmt.Errorf("%w: no ca file", ErrInvalid)
	case f.Cert == "" || f.Key == "":
		return fmt.Errorf("%w: no client cert/key", ErrInvalid)
	}
	return nil
}

// Save writes f to path (mode 0600).
func Save(path string, f File) error {
	b, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	return nil
}
