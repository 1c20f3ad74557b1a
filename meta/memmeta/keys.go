package memmeta

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"filippo.io/age"

	"github.com/cofferhq/coffer/meta"
)

var _ meta.KeyService = (*Service)(nil)

// UpdateVaultKeys implements meta.KeyService as the FSM does (meta.ApplyKeysChange),
// audited with its outcome; a platform wrap must be sealed to Config.PlatformKey.
func (s *Service) UpdateVaultKeys(ctx context.Context, vault meta.VaultID, c meta.KeysChange) (meta.Vault, error) {
	p := meta.PrincipalFrom(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	entry := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: "vault keys " + c.Event, Vault: vault, Reason: c.Reason}
	v, err := func() (meta.Vault, error) {
		for _, w := range c.Keys.Wraps {
			if w.Kind == meta.WrapPlatform && (s.cfg.PlatformKey == nil || w.Recipient != s.cfg.PlatformKey.Recipient().String()) {
				return meta.Vault{}, fmt.Errorf("%w: platform wrap %s is not sealed to this cluster's platform key", meta.ErrInvalid, w.ID)
			}
		}
		v, ok := s.mu.vaults[vault]
		if !ok {
			return meta.Vault{}, fmt.Errorf("vault %s: %w", vault, meta.ErrNotFound)
		}
		v.Keys = v.Keys.Clone()
		target, err := meta.ApplyKeysChange(p, &v, c, now)
		entry.Target = target
		if err != nil {
			return meta.Vault{}, err
		}
		s.mu.vaults[vault] = v
		return v, nil
	}()
	s.auditLocked(now, entry, err, "")
	if err != nil {
		return meta.Vault{}, fmt.Errorf("memmeta: update vault keys: %w", err)
	}
	v.Keys = v.Keys.Clone()
	return meta.VaultFor(p, v), nil
}

// TouchKeyWrap implements meta.KeyService.
func (s *Service) TouchKeyWrap(ctx context.Context, vault meta.VaultID, id string) error {
	p := meta.PrincipalFrom(ctx)
	if err := p.Authorize(meta.ActRead, vault); err != nil {
		return fmt.Errorf("memmeta: key wrap use: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.mu.vaults[vault]
	if !ok || v.Keys == nil {
		return fmt.Errorf("memmeta: vault %s key wrap %s: %w", vault, id, meta.ErrNotFound)
	}
	now := s.nowLocked()
	k := v.Keys.Clone()
	for i := range k.Wraps {
		if k.Wraps[i].ID == id {
			if now.Sub(k.Wraps[i].LastUsed) >= meta.KeyUseInterval {
				k.Wraps[i].LastUsed = now
				v.Keys = k
				s.mu.vaults[vault] = v
			}
			return nil
		}
	}
	return fmt.Errorf("memmeta: vault %s key wrap %s: %w", vault, id, meta.ErrNotFound)
}

// PlatformRecipient implements meta.KeyService.
func (s *Service) PlatformRecipient(ctx context.Context) (string, error) {
	if s.cfg.PlatformKey == nil {
		return "", fmt.Errorf("memmeta: %w: no platform key", meta.ErrUnavailable)
	}
	return s.cfg.PlatformKey.Recipient().String(), nil
}

// PlatformUnwrap implements meta.KeyService (admins only, platform-managed vaults),
// audited with its outcome.
func (s *Service) PlatformUnwrap(ctx context.Context, vault meta.VaultID, recipient string) ([]byte, error) {
	p := meta.PrincipalFrom(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	entry := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: "vault keys platform-unwrap", Vault: vault}
	out, err := func() ([]byte, error) {
		if err := p.Authorize(meta.ActPlatformUnwrap, vault); err != nil {
			return nil, err
		}
		rc, err := age.ParseX25519Recipient(recipient)
		if err != nil {
			return nil, fmt.Errorf("%w: recipient is not an age X25519 recipient", meta.ErrInvalid)
		}
		if s.cfg.PlatformKey == nil {
			return nil, fmt.Errorf("%w: no platform key", meta.ErrUnavailable)
		}
		v, ok := s.mu.vaults[vault]
		if !ok {
			return nil, fmt.Errorf("vault %s: %w", vault, meta.ErrNotFound)
		}
		if v.Keys == nil || v.Keys.Management != meta.KeyPlatform {
			return nil, fmt.Errorf("%w: vault %s is customer-managed: the platform cannot decrypt it", meta.ErrInvalid, vault)
		}
		for _, w := range v.Keys.Wraps {
			if w.Kind != meta.WrapPlatform {
				continue
			}
			r, err := age.Decrypt(bytes.NewReader(w.Keyring), s.cfg.PlatformKey)
			if err != nil {
				return nil, fmt.Errorf("platform wrap %s: %w", w.ID, err)
			}
			plain, err := io.ReadAll(r)
			if err != nil {
				return nil, fmt.Errorf("platform wrap %s: %w", w.ID, err)
			}
			defer clear(plain)
			entry.Target = "platform wrap " + w.ID + ", keyring sealed to " + recipient
			var buf bytes.Buffer
			wc, err := age.Encrypt(&buf, rc)
			if err == nil {
				_, err = wc.Write(plain)
			}
			if err == nil {
				err = wc.Close()
			}
			return buf.Bytes(), err
		}
		return nil, fmt.Errorf("%w: vault %s has no platform wrap", meta.ErrInvalid, vault)
	}()
	s.auditLocked(now, entry, err, "")
	if err != nil {
		return nil, fmt.Errorf("memmeta: platform unwrap: %w", err)
	}
	return out, nil
}
