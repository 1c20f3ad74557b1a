package kms

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	vault "github.com/hashicorp/vault/api"
)

// TransitPlugin is the plugin name that selects the built-in Transit client.
const TransitPlugin = "vault-transit"

// TransitConfig configures a Transit client. Address and token come from the agent's
// own configuration or environment (VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, ...), never
// from the vault's key record: a changed record cannot send the token elsewhere.
type TransitConfig struct {
	// Address of the Vault server; "" reads VAULT_ADDR (vault/api's defaults).
	Address string
	// Token; "" reads VAULT_TOKEN.
	Token string
	// Mount is the Transit engine's mount path (default "transit").
	Mount string
	// HTTPClient, when set, carries the requests (tests).
	HTTPClient *http.Client
}

// Transit is a client of HashiCorp Vault's Transit secrets engine
// (github.com/hashicorp/vault/api). It uses four endpoints: encrypt, decrypt, keys/NAME
// (read: versions and minimum decryption version) and keys/NAME/rotate. Key versions
// are Transit's (1, 2, ...); the ciphertext is Transit's "vault:vN:..." string. A
// Transit key cannot be switched off as such: an operator disables old versions by
// raising the key's min_decryption_version (or withdraws the token's policy), and this
// client reports both as the key being disabled or denied, naming the key and version.
type Transit struct {
	c     *vault.Client
	mount string
}

// NewTransit returns a Transit client.
func NewTransit(cfg TransitConfig) (*Transit, error) {
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("kms: vault transit: %w: %v", ErrInvalid, vc.Error)
	}
	if cfg.Address != "" {
		vc.Address = cfg.Address
	}
	if cfg.HTTPClient != nil {
		vc.HttpClient = cfg.HTTPClient
	}
	vc.MaxRetries = 1
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("kms: vault transit: %w: %v", ErrInvalid, err)
	}
	if cfg.Token != "" {
		c.SetToken(cfg.Token)
	}
	if c.Token() == "" {
		return nil, fmt.Errorf("kms: vault transit: %w: no token (set VAULT_TOKEN)", ErrDenied)
	}
	mount := strings.Trim(cfg.Mount, "/")
	if mount == "" {
		mount = "transit"
	}
	if !transitName(mount, true) {
		return nil, fmt.Errorf("kms: vault transit: %w: mount %.60q", ErrInvalid, mount)
	}
	return &Transit{c: c, mount: mount}, nil
}

// transitName reports whether s is a safe path element (a key name; a mount may have
// slashes).
func transitName(s string, slashes bool) bool {
	if s == "" || len(s) > MaxKeyID {
		return false
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == "" || seg == "." || seg == ".." || (!slashes && seg != s) {
			return false
		}
		for _, c := range seg {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				return false
			}
		}
	}
	return true
}

func (t *Transit) checkKey(op, keyID string) error {
	if !transitName(keyID, false) {
		return &Error{Op: op, KeyID: keyID, Kind: ErrInvalid, Message: "a Transit key name is letters, digits, '-', '_' and '.'"}
	}
	return nil
}

// transitErr classifies an error of the Vault API.
func (t *Transit) transitErr(ctx context.Context, op, keyID, version string, err error) error {
	e := &Error{Op: op, KeyID: keyID, KeyVersion: version, Kind: ErrUnavailable, Message: "vault transit: " + err.Error()}
	var re *vault.ResponseError
	if errors.As(err, &re) {
		msg := strings.Join(re.Errors, "; ")
		e.Message = "vault transit: " + msg
		switch {
		case re.StatusCode == http.StatusForbidden:
			e.Kind = ErrDenied
		case re.StatusCode == http.StatusNotFound, strings.Contains(msg, "key not found"):
			e.Kind = ErrKeyNotFound
		case strings.Contains(msg, "disallowed by policy"), strings.Contains(msg, "too old"):
			e.Kind = ErrKeyDisabled
			if min, err := t.minDecryptionVersion(ctx, keyID); err == nil {
				e.Message = fmt.Sprintf("vault transit: version %s is below the key's min_decryption_version %d (lower it to %s to enable the version again)", version, min, version)
			}
		case re.StatusCode >= 400 && re.StatusCode < 500:
			e.Kind = ErrInvalid
		}
	}
	return e
}

// Wrap implements Client: transit/encrypt/KEY.
func (t *Transit) Wrap(ctx context.Context, vaultID, keyID string, plaintext []byte) (Wrapped, error) {
	if err := t.checkKey(OpWrap, keyID); err != nil {
		return Wrapped{}, err
	}
	if len(plaintext) == 0 || len(plaintext) > MaxPlaintext {
		return Wrapped{}, &Error{Op: OpWrap, KeyID: keyID, Kind: ErrInvalid, Message: fmt.Sprintf("plaintext of %d bytes (1..%d)", len(plaintext), MaxPlaintext)}
	}
	s, err := t.c.Logical().WriteWithContext(ctx, t.mount+"/encrypt/"+keyID, map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString(plaintext),
	})
	if err != nil {
		return Wrapped{}, t.transitErr(ctx, OpWrap, keyID, "", err)
	}
	ct, _ := dataString(s, "ciphertext")
	v, ok := transitVersion(ct)
	if !ok || len(ct) > MaxCiphertext {
		return Wrapped{}, &Error{Op: OpWrap, KeyID: keyID, Kind: ErrInvalid, Message: "vault transit: the encrypt response holds no vault:vN: ciphertext"}
	}
	return Wrapped{KeyID: keyID, KeyVersion: v, Ciphertext: []byte(ct)}, nil
}

// transitVersion returns N of a "vault:vN:..." ciphertext.
func transitVersion(ct string) (string, bool) {
	rest, ok := strings.CutPrefix(ct, "vault:v")
	if !ok {
		return "", false
	}
	v, _, ok := strings.Cut(rest, ":")
	if n, err := strconv.ParseUint(v, 10, 32); !ok || err != nil || n == 0 {
		return "", false
	}
	return v, true
}

// Unwrap implements Client: transit/decrypt/KEY.
func (t *Transit) Unwrap(ctx context.Context, vaultID string, w Wrapped) ([]byte, error) {
	if err := t.checkKey(OpUnwrap, w.KeyID); err != nil {
		return nil, err
	}
	if v, ok := transitVersion(string(w.Ciphertext)); !ok || v != w.KeyVersion {
		return nil, &Error{Op: OpUnwrap, KeyID: w.KeyID, KeyVersion: w.KeyVersion, Kind: ErrInvalid, Message: "not a Transit ciphertext of this version"}
	}
	s, err := t.c.Logical().WriteWithContext(ctx, t.mount+"/decrypt/"+w.KeyID, map[string]any{"ciphertext": string(w.Ciphertext)})
	if err != nil {
		return nil, t.transitErr(ctx, OpUnwrap, w.KeyID, w.KeyVersion, err)
	}
	p, _ := dataString(s, "plaintext")
	pt, err := base64.StdEncoding.DecodeString(p)
	if err != nil || len(pt) == 0 || len(pt) > MaxPlaintext {
		return nil, &Error{Op: OpUnwrap, KeyID: w.KeyID, KeyVersion: w.KeyVersion, Kind: ErrInvalid, Message: "vault transit: the decrypt response holds no plaintext"}
	}
	return pt, nil
}

// Rotate implements Client: transit/keys/KEY/rotate, then the key's latest_version.
func (t *Transit) Rotate(ctx context.Context, vaultID, keyID string) (string, error) {
	if err := t.checkKey(OpRotate, keyID); err != nil {
		return "", err
	}
	if _, err := t.c.Logical().WriteWithContext(ctx, t.mount+"/keys/"+keyID+"/rotate", nil); err != nil {
		return "", t.transitErr(ctx, OpRotate, keyID, "", err)
	}
	k, err := t.readKey(ctx, keyID)
	if err != nil {
		return "", t.transitErr(ctx, OpRotate, keyID, "", err)
	}
	return strconv.FormatInt(k.latest, 10), nil
}

type transitKey struct{ latest, minDecrypt int64 }

func (t *Transit) readKey(ctx context.Context, keyID string) (transitKey, error) {
	s, err := t.c.Logical().ReadWithContext(ctx, t.mount+"/keys/"+keyID)
	if err != nil {
		return transitKey{}, err
	}
	if s == nil {
		return transitKey{}, &vault.ResponseError{StatusCode: http.StatusNotFound, Errors: []string{"key not found"}}
	}
	var k transitKey
	for name, dst := range map[string]*int64{"latest_version": &k.latest, "min_decryption_version": &k.minDecrypt} {
		n, ok := s.Data[name].(json.Number)
		if !ok {
			return transitKey{}, fmt.Errorf("key %s: no %s", keyID, name)
		}
		if *dst, err = n.Int64(); err != nil {
			return transitKey{}, fmt.Errorf("key %s: %s: %w", keyID, name, err)
		}
	}
	return k, nil
}

func (t *Transit) minDecryptionVersion(ctx context.Context, keyID string) (int64, error) {
	k, err := t.readKey(ctx, keyID)
	return k.minDecrypt, err
}

func dataString(s *vault.Secret, name string) (string, bool) {
	if s == nil {
		return "", false
	}
	v, ok := s.Data[name].(string)
	return v, ok
}
