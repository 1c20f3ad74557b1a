package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// The cluster seal key (issue 17, MFA): 32 random bytes that every meta server holds in
// its data directory (Config.SealKeyFile, 0600) and no chunk node ever does. TOTP secrets
// are sealed under a key derived from it, so any leader opens what another sealed. It is
// written by `cofferd bootstrap` (and the dev cluster) for the first meta servers; a meta
// server that joined later fetches it, the first time it needs it, from another server
// of the Raft configuration over mTLS (meta.SealKey: meta servers in the configuration
// only). The key never enters the Raft log or the FSM; an enrollment records the key's ID
// (SealKeyID) so a server holding another key says so instead of failing to open.

// sealKeyLen is the length of the cluster seal key.
const sealKeyLen = 32

// sealKeyPeerTimeout bounds one peer's answer to a seal key request.
const sealKeyPeerTimeout = 5 * time.Second

// sealKeyStore holds the seal key once read or fetched.
type sealKeyStore struct {
	mu  sync.Mutex
	key []byte
}

// ReadSealKeyFile reads a seal key file (64 hex digits, surrounding space ignored).
func ReadSealKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("server: seal key: %w", err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != sealKeyLen {
		return nil, fmt.Errorf("%w: server: seal key %s: want %d hex digits", meta.ErrInvalid, path, 2*sealKeyLen)
	}
	return k, nil
}

// WriteSealKeyFile writes key to path (0600, its directory created 0700) without
// replacing an existing file.
func WriteSealKeyFile(path string, key []byte) error {
	if len(key) != sealKeyLen {
		return fmt.Errorf("%w: server: seal key of %d bytes, want %d", meta.ErrInvalid, len(key), sealKeyLen)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("server: seal key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("server: seal key: %w", err)
	}
	_, err = f.Write([]byte(hex.EncodeToString(key) + "\n"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("server: seal key: %w", err)
	}
	return nil
}

// NewSealKeyFile writes a fresh random seal key to path (cofferd bootstrap, dev) unless
// one exists.
func NewSealKeyFile(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	k := make([]byte, sealKeyLen)
	if _, err := rand.Read(k); err != nil {
		return fmt.Errorf("server: seal key: %w", err)
	}
	return WriteSealKeyFile(path, k)
}

// SealKeyID names a seal key without revealing it (HMAC-SHA256 of a fixed label, 8 bytes
// in hex).
func SealKeyID(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("coffer seal key id v1"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// LocalSealKey returns this server's own seal key (read from Config.SealKeyFile), never
// one fetched for the asking: it answers meta.SealKey for another meta server. A server
// without one answers ErrUnavailable.
func (s *Server) LocalSealKey(context.Context) ([]byte, error) {
	s.sealKey.mu.Lock()
	defer s.sealKey.mu.Unlock()
	if s.sealKey.key != nil {
		return s.sealKey.key, nil
	}
	if s.cfg.SealKeyFile == "" {
		return nil, fmt.Errorf("%w: server: meta server %s keeps no seal key", meta.ErrUnavailable, s.cfg.ID)
	}
	k, err := ReadSealKeyFile(s.cfg.SealKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: server: meta server %s holds no seal key yet", meta.ErrUnavailable, s.cfg.ID)
	}
	if err != nil {
		return nil, err
	}
	s.sealKey.key = k
	return k, nil
}

// clusterSealKey returns the seal key: this server's, or (the first time, on a server
// that joined after bootstrap) one fetched from another meta server of the Raft
// configuration and stored in Config.SealKeyFile. want, when set, is the ID of the key an
// enrollment was sealed under: a key with another ID is refused.
func (s *Server) clusterSealKey(ctx context.Context, want string) ([]byte, error) {
	k, err := s.LocalSealKey(ctx)
	if err == nil {
		if want != "" && SealKeyID(k) != want {
			return nil, fmt.Errorf("%w: server: meta server %s holds seal key %s, the secret was sealed under %s (copy seal.key from a meta server that opens it)",
				meta.ErrUnavailable, s.cfg.ID, SealKeyID(k), want)
		}
		return k, nil
	}
	if !errors.Is(err, meta.ErrUnavailable) || s.cfg.SealKeyFile == "" {
		return nil, err
	}
	if s.cfg.PeerSealKey == nil {
		return nil, fmt.Errorf("%w: server: meta server %s holds no seal key and cannot ask its peers", meta.ErrUnavailable, s.cfg.ID)
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("server: seal key: %w", s.raftErr(err))
	}
	var errs []error
	for _, sv := range f.Configuration().Servers {
		if string(sv.ID) == s.cfg.ID {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, sealKeyPeerTimeout)
		k, err := s.cfg.PeerSealKey(pctx, string(sv.ID), string(sv.Address))
		cancel()
		switch {
		case err != nil:
			errs = append(errs, err)
			continue
		case len(k) != sealKeyLen:
			errs = append(errs, fmt.Errorf("%s answered a seal key of %d bytes", sv.ID, len(k)))
			continue
		case want != "" && SealKeyID(k) != want:
			errs = append(errs, fmt.Errorf("%s holds seal key %s, not %s", sv.ID, SealKeyID(k), want))
			continue
		}
		s.sealKey.mu.Lock()
		defer s.sealKey.mu.Unlock()
		if s.sealKey.key != nil { // fetched concurrently
			return s.sealKey.key, nil
		}
		if err := WriteSealKeyFile(s.cfg.SealKeyFile, k); err != nil {
			return nil, err
		}
		s.log.Info("fetched the cluster seal key from a peer", "peer", sv.ID, "key_id", SealKeyID(k))
		s.sealKey.key = k
		return k, nil
	}
	return nil, fmt.Errorf("%w: server: meta server %s holds no seal key and no peer gave one (%v); the first meta server writes it at bootstrap (%s)",
		meta.ErrUnavailable, s.cfg.ID, errors.Join(errs...), filepath.Base(s.cfg.SealKeyFile))
}
