package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/kms"
	"github.com/cofferhq/coffer/meta"
)

// KMS wraps (issue 17 step 5). A KMS wrap's holder is an age identity made on the agent
// whose private key an external KMS encrypted (KeyWrap.Identity holds the KMS's
// ciphertext, Holder the key ID, Params the plugin and key version); the keyring is
// sealed to the identity's public half like any wrap's. Opening the vault asks the KMS to
// decrypt the identity: the KMS sees the identity, never the keyring; the cluster sees
// neither.

// KMSResolver gives the KMS client of a plugin name (*kms.Resolver).
type KMSResolver interface {
	Client(plugin string) (kms.Client, error)
}

func hasKind(k *meta.VaultKeys, kind string) bool {
	return slices.ContainsFunc(k.Wraps, func(w meta.KeyWrap) bool { return w.Kind == kind })
}

// describeKMSWrap names a KMS wrap for messages: its ID, key, version and plugin.
func describeKMSWrap(w meta.KeyWrap) string {
	return fmt.Sprintf("kms wrap %s (key %q version %s, plugin %s)", w.ID, w.Holder, w.Params[meta.ParamKeyVersion], w.Params[meta.ParamPlugin])
}

// unlockKMS opens v's keyring through its KMS wraps, in order; the first that opens
// wins. No KMS wrap, or none whose plugin this host has: ErrNoWrap. Otherwise the first
// KMS error, naming the wrap's key (a disabled key: kms.ErrKeyDisabled).
func unlockKMS(ctx context.Context, v meta.Vault, r KMSResolver) (*crypt.Keyring, string, error) {
	var first error
	missing := 0
	for _, w := range v.Keys.Wraps {
		if w.Kind != meta.WrapKMS {
			continue
		}
		c, err := r.Client(w.Params[meta.ParamPlugin])
		if err != nil {
			missing++
			if first == nil {
				first = fmt.Errorf("%w: vault %s: %s: %v", ErrNoWrap, v.ID, describeKMSWrap(w), err)
			}
			continue
		}
		kr, err := openKMSWrap(ctx, v, w, c)
		if err == nil {
			return kr, w.ID, nil
		}
		if first == nil || errors.Is(first, ErrNoWrap) {
			first = err
		}
	}
	if first == nil {
		return nil, "", fmt.Errorf("%w: vault %s has no kms wrap", ErrNoWrap, v.ID)
	}
	return nil, "", first
}

// openKMSWrap asks c to decrypt w's identity and opens w's keyring with it.
func openKMSWrap(ctx context.Context, v meta.Vault, w meta.KeyWrap, c kms.Client) (*crypt.Keyring, error) {
	pt, err := c.Unwrap(ctx, string(v.ID), kms.Wrapped{KeyID: w.Holder, KeyVersion: w.Params[meta.ParamKeyVersion], Ciphertext: w.Identity})
	if err != nil {
		return nil, fmt.Errorf("client: open vault %s: %s: %w", v.ID, describeKMSWrap(w), err)
	}
	defer clear(pt)
	id, err := crypt.ParseIdentity(pt)
	if err != nil {
		return nil, fmt.Errorf("client: open vault %s: %s: the KMS returned no identity: %w", v.ID, describeKMSWrap(w), err)
	}
	if id.Recipient() != w.Recipient {
		return nil, fmt.Errorf("client: open vault %s: %s: %w: the KMS returned the identity of %s, the wrap is sealed to %s", v.ID, describeKMSWrap(w), ErrInvalid, id.Recipient(), w.Recipient)
	}
	kr, err := crypt.OpenKeyring(w.Keyring, string(v.ID), id)
	if err != nil {
		return nil, fmt.Errorf("client: open vault %s: %s: %w", v.ID, describeKMSWrap(w), err)
	}
	return kr, nil
}

// kmsIdentity makes a new holder identity and has c encrypt it under keyID's current
// version; it checks that the KMS decrypts it back before the wrap is relied on. The
// returned wrap has no sealed keyring yet.
func kmsIdentity(ctx context.Context, vault meta.VaultID, c kms.Client, plugin, keyID string) (meta.KeyWrap, error) {
	if err := kms.ValidatePluginName(plugin); err != nil {
		return meta.KeyWrap{}, fmt.Errorf("client: kms wrap: %w: %w", ErrInvalid, err)
	}
	if err := kms.ValidateKeyID(keyID); err != nil {
		return meta.KeyWrap{}, fmt.Errorf("client: kms wrap: %w: %w", ErrInvalid, err)
	}
	id, err := crypt.NewIdentity()
	if err != nil {
		return meta.KeyWrap{}, err
	}
	text, err := id.MarshalText()
	if err != nil {
		return meta.KeyWrap{}, err
	}
	defer clear(text)
	w, err := c.Wrap(ctx, string(vault), keyID, text)
	if err != nil {
		return meta.KeyWrap{}, fmt.Errorf("client: kms wrap of vault %s with key %q (plugin %s): %w", vault, keyID, plugin, err)
	}
	back, err := c.Unwrap(ctx, string(vault), w)
	if err != nil {
		return meta.KeyWrap{}, fmt.Errorf("client: kms wrap of vault %s: the KMS does not decrypt what it encrypted: %w", vault, err)
	}
	same := string(back) == string(text)
	clear(back)
	if !same {
		return meta.KeyWrap{}, fmt.Errorf("client: kms wrap of vault %s with key %q (plugin %s): %w: the KMS decrypted something else than it encrypted", vault, keyID, plugin, ErrInvalid)
	}
	return meta.KeyWrap{Kind: meta.WrapKMS, Holder: keyID, Recipient: id.Recipient(), Identity: w.Ciphertext,
		Params: map[string]string{meta.ParamPlugin: plugin, meta.ParamKeyVersion: w.KeyVersion}}, nil
}

// AddKMSWrap wraps the vault key under KMS key keyID through c (the client of plugin, the
// name the wrap records so that agents find the KMS again): a new identity, encrypted by
// the KMS under the key's current version, and the keyring sealed to it. A wrap for the
// same key and plugin already there is refused (ErrExists: rotate-kms re-wraps it).
// Admins and the vault's backup agents; audited.
func (a *Agent) AddKMSWrap(ctx context.Context, c kms.Client, plugin, keyID, reason string) (KeyChange, error) {
	if err := a.check(); err != nil {
		return meta.Vault{}, err
	}
	nw, err := kmsIdentity(ctx, a.vault.ID, c, plugin, keyID)
	if err != nil {
		return meta.Vault{}, err
	}
	if nw.ID, err = newWrapID(a.cfg.Rand); err != nil {
		return meta.Vault{}, err
	}
	a.ks.mu.Lock()
	defer a.ks.mu.Unlock()
	return a.ks.change(ctx, "add kms", reason, false, func(k *meta.VaultKeys) (bool, error) {
		for _, w := range k.Wraps {
			if w.Kind == meta.WrapKMS && w.Holder == keyID && w.Params[meta.ParamPlugin] == plugin {
				return false, fmt.Errorf("%w: vault %s already holds %s; re-wrap it under the key's new version with coffer vault keys rotate-kms %s", meta.ErrExists, a.vault.ID, describeKMSWrap(w), w.ID)
			}
		}
		k.Wraps = append(k.Wraps, nw)
		return false, nil
	})
}

// RotateKMS re-wraps KMS wrap id under its key's newest version: with newVersion the KMS
// first makes one (kms.Client.Rotate); without, the version the KMS now encrypts under
// (a KMS that rotates by itself) is used. A new identity is encrypted under that version
// and the keyring sealed to it; the wrap keeps its ID. Every epoch stays in the keyring,
// so every earlier recovery point stays readable, and the old key version is no longer
// needed by this vault (the KMS may disable it). Admins only; audited with both versions.
func (a *Agent) RotateKMS(ctx context.Context, c kms.Client, id string, newVersion bool, reason string) (KeyChange, error) {
	if err := a.check(); err != nil {
		return meta.Vault{}, err
	}
	a.ks.mu.Lock()
	defer a.ks.mu.Unlock()
	v, err := a.cfg.Meta.GetVault(ctx, a.vault.ID)
	if err != nil {
		return meta.Vault{}, fmt.Errorf("client: rotate-kms: %w", err)
	}
	var old meta.KeyWrap
	ok := false
	if v.Keys != nil {
		old, ok = v.Keys.Wrap(id)
	}
	if !ok || old.Kind != meta.WrapKMS {
		return meta.Vault{}, fmt.Errorf("%w: vault %s has no kms wrap %s", meta.ErrNotFound, a.vault.ID, id)
	}
	plugin := old.Params[meta.ParamPlugin]
	if newVersion {
		if _, err := c.Rotate(ctx, string(a.vault.ID), old.Holder); err != nil {
			return meta.Vault{}, fmt.Errorf("client: rotate-kms of vault %s: new version of key %q: %w", a.vault.ID, old.Holder, err)
		}
	}
	nw, err := kmsIdentity(ctx, a.vault.ID, c, plugin, old.Holder)
	if err != nil {
		return meta.Vault{}, err
	}
	return a.ks.change(ctx, "rotate-kms", reason, false, func(k *meta.VaultKeys) (bool, error) {
		i := slices.IndexFunc(k.Wraps, func(w meta.KeyWrap) bool { return w.ID == id })
		if i < 0 {
			return false, fmt.Errorf("%w: vault %s has no kms wrap %s", meta.ErrNotFound, a.vault.ID, id)
		}
		w := &k.Wraps[i]
		w.Recipient, w.Identity, w.Params, w.Keyring = nw.Recipient, nw.Identity, nw.Params, nil
		return false, nil
	})
}
