// Package kmstest provides test doubles of the KMSes client/kms speaks to: a KMS plugin
// whose keys live in a state file (the test binary runs it by re-executing itself,
// PluginMain), and a fake HashiCorp Vault Transit HTTP server (Transit). Both keep real
// AES-256-GCM keys per version, rotate, and can disable a key (or, for Transit, raise its
// minimum decryption version) and enable it again. For tests only.
package kmstest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cofferhq/coffer/client/kms"
)

// EnvPlugin, set to "1", makes a test binary's TestMain run PluginMain instead of its
// tests; EnvState names the plugin's state file.
const (
	EnvPlugin = "COFFER_KMSTEST_PLUGIN"
	EnvState  = "COFFER_KMSTEST_STATE"
)

// State is the plugin's state file: its keys and how often each operation ran.
type State struct {
	Keys  map[string]*Key `json:"keys"`
	Calls map[string]int  `json:"calls"`
}

// Key is one KMS key: a random AES-256 key per version (the last is current).
type Key struct {
	Versions [][]byte `json:"versions"`
	Disabled bool     `json:"disabled"`
}

// Store is a state file.
type Store struct{ Path string }

// NewStore creates a state file in dir holding the keys named (one version each).
func NewStore(dir string, keys ...string) (*Store, error) {
	s := &Store{Path: filepath.Join(dir, "kms-state.json")}
	st := &State{Keys: map[string]*Key{}, Calls: map[string]int{}}
	for _, k := range keys {
		st.Keys[k] = &Key{}
		if err := addVersion(st.Keys[k]); err != nil {
			return nil, err
		}
	}
	return s, s.save(st)
}

func addVersion(k *Key) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	k.Versions = append(k.Versions, b)
	return nil
}

// Load reads the state.
func (s *Store) Load() (*State, error) {
	b, err := os.ReadFile(s.Path)
	if err != nil {
		return nil, fmt.Errorf("kmstest: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("kmstest: %s: %w", s.Path, err)
	}
	return &st, nil
}

func (s *Store) save(st *State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := s.Path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.Path)
}

func (s *Store) update(fn func(*State) error) error {
	st, err := s.Load()
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	return s.save(st)
}

// SetDisabled disables or enables key (what a KMS administrator does).
func (s *Store) SetDisabled(key string, disabled bool) error {
	return s.update(func(st *State) error {
		k, ok := st.Keys[key]
		if !ok {
			return fmt.Errorf("kmstest: no key %s", key)
		}
		k.Disabled = disabled
		return nil
	})
}

// Calls returns how often op ran.
func (s *Store) Calls(op string) int {
	st, err := s.Load()
	if err != nil {
		return -1
	}
	return st.Calls[op]
}

// Handle answers one request against the state file (what the plugin does).
func (s *Store) Handle(req kms.Request) kms.Response {
	var resp kms.Response
	err := s.update(func(st *State) error {
		st.Calls[req.Op]++
		k, ok := st.Keys[req.KeyID]
		if !ok {
			return fmt.Errorf("%w: no key %q in this KMS", kms.ErrKeyNotFound, req.KeyID)
		}
		if k.Disabled {
			return fmt.Errorf("%w: key %q is disabled", kms.ErrKeyDisabled, req.KeyID)
		}
		switch req.Op {
		case kms.OpWrap:
			v := len(k.Versions)
			ct, err := seal(k.Versions[v-1], uint32(v), req)
			if err != nil {
				return err
			}
			resp = kms.Response{KeyID: req.KeyID, KeyVersion: strconv.Itoa(v), Ciphertext: ct}
		case kms.OpUnwrap:
			v, err := strconv.Atoi(req.KeyVersion)
			if err != nil || v < 1 || v > len(k.Versions) {
				return fmt.Errorf("%w: key %q has no version %q", kms.ErrKeyNotFound, req.KeyID, req.KeyVersion)
			}
			pt, err := open(k.Versions[v-1], uint32(v), req)
			if err != nil {
				return err
			}
			resp = kms.Response{Plaintext: pt}
		case kms.OpRotate:
			if err := addVersion(k); err != nil {
				return err
			}
			resp = kms.Response{KeyID: req.KeyID, KeyVersion: strconv.Itoa(len(k.Versions))}
		}
		return nil
	})
	if err != nil {
		return kms.ErrorResponse(err)
	}
	resp.Protocol = kms.Protocol
	return resp
}

func aad(req kms.Request) []byte { return []byte(req.KeyID + "\x00" + req.Context["vault"]) }

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func seal(key []byte, version uint32, req kms.Request) ([]byte, error) {
	a, err := gcm(key)
	if err != nil {
		return nil, err
	}
	out := binary.BigEndian.AppendUint32([]byte("fake"), version)
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return a.Seal(out, nonce, req.Plaintext, aad(req)), nil
}

func open(key []byte, version uint32, req kms.Request) ([]byte, error) {
	a, err := gcm(key)
	if err != nil {
		return nil, err
	}
	ct := req.Ciphertext
	if len(ct) < 8+a.NonceSize() || !bytes.Equal(ct[:4], []byte("fake")) || binary.BigEndian.Uint32(ct[4:]) != version {
		return nil, fmt.Errorf("%w: not a ciphertext of version %d", kms.ErrInvalid, version)
	}
	pt, err := a.Open(nil, ct[8:8+a.NonceSize()], ct[8+a.NonceSize():], aad(req))
	if err != nil {
		return nil, fmt.Errorf("%w: the ciphertext does not open under key %s version %d for this context", kms.ErrInvalid, req.KeyID, version)
	}
	return pt, nil
}

// PluginMain is the plugin: one request from stdin, one response to stdout, state in
// the file EnvState names. It returns the exit status.
func PluginMain(stdin io.Reader, stdout io.Writer) int {
	b, err := io.ReadAll(io.LimitReader(stdin, kms.MaxMessageSize+1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kmstest plugin:", err)
		return 2
	}
	req, err := kms.DecodeRequest(b)
	if err != nil {
		stdout.Write(kms.EncodeResponse(kms.ErrorResponse(err)))
		return 0
	}
	path := os.Getenv(EnvState)
	if path == "" {
		fmt.Fprintln(os.Stderr, "kmstest plugin:", errors.New(EnvState+" is not set"))
		return 2
	}
	stdout.Write(kms.EncodeResponse((&Store{Path: path}).Handle(req)))
	return 0
}
