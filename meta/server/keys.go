package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

var _ meta.KeyService = (*Server)(nil)

// maxPlatformKeyring bounds what PlatformUnwrap decrypts (meta's bound on a sealed
// keyring).
const maxPlatformKeyring = 256 << 10

// UpdateVaultKeys implements meta.KeyService. The FSM decides (meta.CheckKeysChange at
// the record's revision); the leader only checks that a platform wrap is sealed to the
// platform key it holds, since the FSM does not know that key.
func (s *Server) UpdateVaultKeys(ctx context.Context, vault meta.VaultID, c meta.KeysChange) (meta.Vault, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Vault{}, err
	}
	p := meta.PrincipalFrom(ctx)
	if err := s.checkPlatformWraps(c.Keys.Wraps); err != nil {
		if errors.Is(err, meta.ErrInvalid) {
			s.auditRefusal(ctx, p, "vault keys "+c.Event, vault, "", err)
		}
		return meta.Vault{}, err
	}
	if err := s.gateVaultKeys(ctx, vault, c); err != nil {
		return meta.Vault{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.SetVaultKeys{Vault: vault, Change: c, By: p})
	if err != nil {
		return meta.Vault{}, fmt.Errorf("server: update keys of vault %s: %w", vault, err)
	}
	return meta.VaultFor(p, res.(meta.Vault)), nil
}

// checkPlatformWraps checks that every platform wrap is sealed to this server's platform
// key: ErrUnavailable without one, ErrInvalid for another recipient.
func (s *Server) checkPlatformWraps(wraps []meta.KeyWrap) error {
	for _, w := range wraps {
		if w.Kind != meta.WrapPlatform {
			continue
		}
		if s.cfg.PlatformKey == nil {
			return fmt.Errorf("%w: server: meta server %s holds no platform key (set platform_key_file in its cofferd config), so no vault can be platform-managed", meta.ErrUnavailable, s.cfg.ID)
		}
		if want := s.cfg.PlatformKey.Recipient().String(); w.Recipient != want {
			return fmt.Errorf("%w: server: platform wrap %s is sealed to %.80s, not to this cluster's platform key %s", meta.ErrInvalid, w.ID, w.Recipient, want)
		}
	}
	return nil
}

// TouchKeyWrap implements meta.KeyService; a use within meta.KeyUseInterval of the last
// recorded one writes nothing.
func (s *Server) TouchKeyWrap(ctx context.Context, vault meta.VaultID, id string) error {
	if err := s.leaderWrite(); err != nil {
		return err
	}
	p := meta.PrincipalFrom(ctx)
	if err := p.Authorize(meta.ActRead, vault); err != nil {
		return fmt.Errorf("server: key wrap use: %w", err)
	}
	v, err := s.fsm.Vault(vault)
	if err != nil {
		return err
	}
	if v.Keys != nil {
		if w, ok := v.Keys.Wrap(id); ok && s.fsm.Now().Sub(w.LastUsed) < meta.KeyUseInterval {
			return nil
		}
	}
	if _, err := s.propose(timeoutOf(ctx), command.TouchKeyWrap{Vault: vault, ID: id, By: p}); err != nil {
		return fmt.Errorf("server: key wrap use: %w", err)
	}
	return nil
}

// PlatformRecipient implements meta.KeyService.
func (s *Server) PlatformRecipient(ctx context.Context) (string, error) {
	p := meta.PrincipalFrom(ctx)
	if !p.SeesKeyWraps() {
		return "", fmt.Errorf("%w: server: %s may not read the platform recipient", meta.ErrDenied, p)
	}
	if s.cfg.PlatformKey == nil {
		return "", fmt.Errorf("%w: server: meta server %s holds no platform key (set platform_key_file in its cofferd config)", meta.ErrUnavailable, s.cfg.ID)
	}
	return s.cfg.PlatformKey.Recipient().String(), nil
}

// PlatformUnwrap implements meta.KeyService. The keyring is decrypted in this server's
// memory only, sealed again to the caller's one-time recipient, and the use is in the
// audit log before the reply leaves.
func (s *Server) PlatformUnwrap(ctx context.Context, vault meta.VaultID, recipient string) ([]byte, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	p := meta.PrincipalFrom(ctx)
	const action = "vault keys platform-unwrap"
	if err := p.Authorize(meta.ActPlatformUnwrap, vault); err != nil {
		s.auditRefusal(ctx, p, action, vault, "", err)
		return nil, fmt.Errorf("server: platform unwrap: %w", err)
	}
	rc, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		return nil, fmt.Errorf("%w: server: platform unwrap: recipient %.80q is not an age X25519 recipient", meta.ErrInvalid, recipient)
	}
	if s.cfg.PlatformKey == nil {
		return nil, fmt.Errorf("%w: server: meta server %s holds no platform key (set platform_key_file in its cofferd config)", meta.ErrUnavailable, s.cfg.ID)
	}
	v, err := s.fsm.Vault(vault)
	if err != nil {
		return nil, err
	}
	if v.Keys == nil || v.Keys.Management != meta.KeyPlatform {
		err := fmt.Errorf("%w: vault %s is customer-managed: the platform holds no wrap of its key and cannot decrypt it", meta.ErrInvalid, vault)
		s.auditRefusal(ctx, p, action, vault, "", err)
		return nil, err
	}
	var wrap meta.KeyWrap
	for _, w := range v.Keys.Wraps {
		if w.Kind == meta.WrapPlatform {
			wrap = w
		}
	}
	r, err := age.Decrypt(bytes.NewReader(wrap.Keyring), s.cfg.PlatformKey)
	var plain []byte
	if err == nil {
		plain, err = io.ReadAll(io.LimitReader(r, maxPlatformKeyring))
	}
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			err = fmt.Errorf("%w: server: vault %s's platform wrap %s is not sealed to this server's platform key (was platform_key_file changed?)", meta.ErrUnavailable, vault, wrap.ID)
		} else {
			err = fmt.Errorf("server: vault %s's platform wrap %s: %w", vault, wrap.ID, err)
		}
		s.auditRefusal(ctx, p, action, vault, "platform wrap "+wrap.ID, err)
		return nil, err
	}
	defer clear(plain)
	var out bytes.Buffer
	w, err := age.Encrypt(&out, rc)
	if err == nil {
		_, err = w.Write(plain)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("server: platform unwrap: %w", err)
	}
	e := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: action, Vault: vault, Outcome: meta.AuditOK,
		Target: fmt.Sprintf("platform wrap %s, keyring sealed to %s", wrap.ID, recipient)}
	if _, err := s.propose(timeoutOf(ctx), command.RecordAudit{Entry: e}); err != nil {
		return nil, fmt.Errorf("server: platform unwrap: audit: %w", err)
	}
	if _, err := s.propose(timeoutOf(ctx), command.TouchKeyWrap{Vault: vault, ID: wrap.ID, By: meta.SystemPrincipal()}); err != nil {
		s.log.Warn("platform wrap use not recorded", "vault", vault, "err", err)
	}
	return out.Bytes(), nil
}
