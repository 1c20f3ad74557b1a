package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/cofferhq/coffer/client/chunker"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// Vault keys (issue 17). A vault's key record (meta.VaultKeys) holds one wrap per
// holder: the keyring (master key and the data key of every epoch, crypt.Keyring) sealed
// to the holder's X25519 recipient. Open unwraps it with this host's identity (a host
// wrap), a passphrase (a passphrase wrap: the identity sealed under Argon2id) or, for an
// admin of a platform-managed vault, through the meta servers' platform key. Changes
// (rotation, passphrase change, host wraps, key management) are made here, where the
// keyring is in the clear, and sent as a whole new record (compare-and-swap on its
// revision): the cluster never sees a key.

// ErrNoWrap: the vault holds no key wrap this unlock can open (no wrap for this host's
// key, no passphrase given, or a platform unwrap of a customer-managed vault).
var ErrNoWrap = errors.New("client: no key wrap for this holder")

// Unlock says how Open obtains a vault's key. Open tries, in order: Identity (this host's
// wrap), Platform, Passphrase.
type Unlock struct {
	// Passphrase opens a passphrase wrap (or a legacy passphrase wrapping).
	Passphrase []byte
	// Identity is this host's own key pair (generated at enrollment); it opens the
	// host's wrap.
	Identity *crypt.Identity
	// Platform asks the meta servers to open the platform wrap of a platform-managed
	// vault (admins only, audited) and to seal the keyring to a one-time key of this
	// process: a restore with no passphrase.
	Platform bool
	// KMS, when set, opens the vault's KMS wraps: the KMS decrypts the wrap's identity
	// (kms_keys.go). A KMS that refuses (a disabled key) fails the open with an error
	// naming the key unless a Passphrase is given too; a wrap whose plugin this host does
	// not have is skipped (ErrNoWrap).
	KMS KMSResolver
}

// InitOptions configure InitVaultWith.
type InitOptions struct {
	// Passphrase protects the first wrap. Required.
	Passphrase []byte
	// Management is meta.KeyCustomer (the default) or meta.KeyPlatform (the key is also
	// wrapped to the cluster's platform key: the platform can decrypt the vault).
	Management string
}

// newWrapID returns a random wrap ID (16 hex digits).
func newWrapID(rand io.Reader) (string, error) {
	var b [8]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return "", fmt.Errorf("client: wrap ID: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// passphraseWrap makes a passphrase wrap (keyring left empty: changeKeys seals it) and
// the holder key a key cache entry stands for.
func passphraseWrap(cfg Config, passphrase []byte) (meta.KeyWrap, crypt.MasterKey, error) {
	id, err := crypt.NewIdentity()
	if err != nil {
		return meta.KeyWrap{}, crypt.MasterKey{}, err
	}
	blob, hk, err := crypt.SealIdentity(id, passphrase, cfg.Argon2, cfg.Rand)
	if err != nil {
		return meta.KeyWrap{}, crypt.MasterKey{}, err
	}
	wid, err := newWrapID(cfg.Rand)
	if err != nil {
		return meta.KeyWrap{}, crypt.MasterKey{}, err
	}
	return meta.KeyWrap{ID: wid, Kind: meta.WrapPassphrase, Holder: meta.WrapPassphrase, Recipient: id.Recipient(), Identity: blob}, hk, nil
}

// sealWraps seals kr to every wrap of k that has no sealed keyring yet, or to all when
// all is set (a rotation).
func sealWraps(k *meta.VaultKeys, kr *crypt.Keyring, all bool) error {
	for i := range k.Wraps {
		w := &k.Wraps[i]
		if !all && len(w.Keyring) > 0 {
			continue
		}
		s, err := crypt.SealKeyring(kr, w.Recipient)
		if err != nil {
			return fmt.Errorf("client: seal keyring to %s wrap %s (%s): %w", w.Kind, w.ID, w.Holder, err)
		}
		w.Keyring = s
	}
	return nil
}

func keyService(cfg Config) (meta.KeyService, error) {
	ks, ok := cfg.Meta.(meta.KeyService)
	if !ok {
		return nil, fmt.Errorf("%w: the metadata service keeps no vault key records", ErrInvalid)
	}
	return ks, nil
}

// InitVaultWith creates vault with a new random master key (epoch 0), wrapped by a
// passphrase and, for meta.KeyPlatform, also to the cluster's platform key. It fails with
// meta.ErrExists when the vault exists (nothing is changed), crypt.ErrInvalid for an
// empty passphrase, and meta.ErrUnavailable for a platform-managed vault on a cluster
// without a platform key. With the local key cache on, the passphrase wrap's holder key
// is cached as Open would cache it.
func InitVaultWith(ctx context.Context, cfg Config, vault meta.VaultID, o InitOptions) (meta.Vault, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return meta.Vault{}, err
	}
	if vault == "" {
		return meta.Vault{}, fmt.Errorf("%w: empty vault id", ErrInvalid)
	}
	if o.Management == "" {
		o.Management = meta.KeyCustomer
	}
	if o.Management != meta.KeyCustomer && o.Management != meta.KeyPlatform {
		return meta.Vault{}, fmt.Errorf("%w: key management %q (want %q or %q)", ErrInvalid, o.Management, meta.KeyCustomer, meta.KeyPlatform)
	}
	mk, err := crypt.NewMasterKey(cfg.Rand)
	if err != nil {
		return meta.Vault{}, fmt.Errorf("client: init vault %s: %w", vault, err)
	}
	kr := crypt.NewKeyring(string(vault), mk)
	pw, hk, err := passphraseWrap(cfg, o.Passphrase)
	if err != nil {
		return meta.Vault{}, fmt.Errorf("client: init vault %s: %w", vault, err)
	}
	keys := meta.VaultKeys{Management: o.Management, Wraps: []meta.KeyWrap{pw}}
	if o.Management == meta.KeyPlatform {
		ks, err := keyService(cfg)
		if err != nil {
			return meta.Vault{}, err
		}
		rc, err := ks.PlatformRecipient(ctx)
		if err != nil {
			return meta.Vault{}, fmt.Errorf("client: init vault %s: platform key: %w", vault, err)
		}
		wid, err := newWrapID(cfg.Rand)
		if err != nil {
			return meta.Vault{}, err
		}
		keys.Wraps = append(keys.Wraps, meta.KeyWrap{ID: wid, Kind: meta.WrapPlatform, Holder: meta.PlatformHolder, Recipient: rc})
	}
	if err := sealWraps(&keys, kr, false); err != nil {
		return meta.Vault{}, err
	}
	v, err := cfg.Meta.CreateVault(ctx, meta.Vault{
		ID:      vault,
		Profile: placement.DefaultProfile,
		Keys:    &keys,
		Chunker: chunker.DefaultParams().Name(),
	})
	if errors.Is(err, meta.ErrExists) {
		// A retried create whose first attempt was committed (its reply lost to a
		// leader change) finds its own vault: the same freshly sealed identity says so.
		if got, gerr := cfg.Meta.GetVault(ctx, vault); gerr == nil && got.Keys != nil && len(got.Keys.Wraps) > 0 && bytes.Equal(got.Keys.Wraps[0].Identity, pw.Identity) {
			v, err = got, nil
		}
	}
	if err != nil {
		return meta.Vault{}, fmt.Errorf("client: init vault %s: %w", vault, err)
	}
	saveKeyCache(cfg, v, pw.Identity, hk, o.Passphrase)
	return v, nil
}

// unlockKeyring opens v's key record as u allows and returns the keyring and the ID of
// the wrap that opened it.
func unlockKeyring(ctx context.Context, cfg Config, v meta.Vault, u Unlock) (*crypt.Keyring, string, bool, error) {
	k := v.Keys
	if u.Identity != nil {
		for _, w := range k.Wraps {
			if w.Recipient != u.Identity.Recipient() {
				continue
			}
			kr, err := crypt.OpenKeyring(w.Keyring, string(v.ID), u.Identity)
			if err != nil {
				return nil, "", false, fmt.Errorf("client: open vault %s: %s wrap %s: %w", v.ID, w.Kind, w.ID, err)
			}
			return kr, w.ID, false, nil
		}
		if len(u.Passphrase) == 0 && !u.Platform && u.KMS == nil {
			return nil, "", false, fmt.Errorf("%w: vault %s has no key wrap for this host's key %s (add one: coffer vault keys add-host, with the passphrase)", ErrNoWrap, v.ID, u.Identity.Recipient())
		}
	}
	if u.Platform {
		ks, err := keyService(cfg)
		if err != nil {
			return nil, "", false, err
		}
		once, err := crypt.NewIdentity()
		if err != nil {
			return nil, "", false, err
		}
		sealed, err := ks.PlatformUnwrap(ctx, v.ID, once.Recipient())
		if err != nil {
			return nil, "", false, fmt.Errorf("client: open vault %s through the platform key: %w", v.ID, err)
		}
		kr, err := crypt.OpenKeyring(sealed, string(v.ID), once)
		if err != nil {
			return nil, "", false, fmt.Errorf("client: open vault %s through the platform key: %w", v.ID, err)
		}
		for _, w := range k.Wraps {
			if w.Kind == meta.WrapPlatform {
				return kr, w.ID, false, nil
			}
		}
		return kr, "", false, nil
	}
	if u.KMS != nil {
		kr, wid, err := unlockKMS(ctx, v, u.KMS)
		if err == nil {
			return kr, wid, false, nil
		}
		// A KMS refusal stands unless a passphrase is given for a passphrase wrap; no KMS
		// wrap (or plugin) here goes on to the passphrase.
		refusal, pws := !errors.Is(err, ErrNoWrap), hasKind(k, meta.WrapPassphrase)
		if refusal && (!pws || len(u.Passphrase) == 0) {
			return nil, "", false, err
		}
		if !pws {
			return nil, "", false, fmt.Errorf("%w: vault %s has no passphrase wrap, and no kms wrap opens here (%v)", ErrNoWrap, v.ID, err)
		}
		cfg.Logger.Debug("vault not opened through its KMS wraps; trying the passphrase", "vault", v.ID, "err", err)
	}
	var blobs [][]byte
	var pws []meta.KeyWrap
	for _, w := range k.Wraps {
		if w.Kind == meta.WrapPassphrase {
			blobs, pws = append(blobs, w.Identity), append(pws, w)
		}
	}
	if len(pws) == 0 {
		return nil, "", false, fmt.Errorf("%w: vault %s has no passphrase wrap", ErrNoWrap, v.ID)
	}
	if len(u.Passphrase) == 0 {
		return nil, "", false, fmt.Errorf("%w: no passphrase given (vault %s)", ErrNoWrap, v.ID)
	}
	open := func(w meta.KeyWrap, id *crypt.Identity) (*crypt.Keyring, string, error) {
		kr, err := crypt.OpenKeyring(w.Keyring, string(v.ID), id)
		if err != nil {
			return nil, "", fmt.Errorf("client: open vault %s: passphrase wrap %s: %w", v.ID, w.ID, err)
		}
		return kr, w.ID, nil
	}
	if hk, i, ok := openKeyCacheOf(cfg, v, blobs, u.Passphrase); ok {
		if id, err := crypt.OpenIdentityKey(pws[i].Identity, hk); err == nil {
			kr, wid, err := open(pws[i], id)
			return kr, wid, true, err
		}
	}
	for _, w := range pws {
		id, hk, err := crypt.OpenIdentity(w.Identity, u.Passphrase)
		if errors.Is(err, crypt.ErrWrongPassphrase) {
			continue
		}
		if err != nil {
			return nil, "", false, fmt.Errorf("client: open vault %s: passphrase wrap %s: %w", v.ID, w.ID, err)
		}
		saveKeyCache(cfg, v, w.Identity, hk, u.Passphrase)
		kr, wid, err := open(w, id)
		return kr, wid, false, err
	}
	return nil, "", false, fmt.Errorf("client: open vault %s: %w", v.ID, ErrWrongPassphrase)
}

// keyState is an opened vault's key record and keyring, from which key changes are made.
type keyState struct {
	mu    sync.Mutex // held by the Agent methods that change keys
	cfg   Config
	vault meta.Vault
	kr    *crypt.Keyring
}

// change reads the vault's current key record, lets edit change a copy (keyrings of new
// wraps left empty), rotates when asked or when a rotation is due, seals the keyring to
// every wrap that needs it and sends the record (compare-and-swap). On success ks holds
// the new record and keyring.
func (ks *keyState) change(ctx context.Context, event, reason string, rotate bool, edit func(k *meta.VaultKeys) (bool, error)) (meta.Vault, error) {
	svc, err := keyService(ks.cfg)
	if err != nil {
		return meta.Vault{}, err
	}
	v, err := ks.cfg.Meta.GetVault(ctx, ks.vault.ID)
	if err != nil {
		return meta.Vault{}, fmt.Errorf("client: %s: %w", event, err)
	}
	var next meta.VaultKeys
	var rev uint64
	if v.Keys == nil {
		next = meta.VaultKeys{Management: meta.KeyCustomer}
	} else {
		next, rev = *v.Keys.Clone(), v.Keys.Revision
		if v.Keys.Epoch != ks.kr.Epoch() {
			return meta.Vault{}, fmt.Errorf("client: %s: %w: vault %s is at key epoch %d, this agent opened it at %d (open it again)", event, meta.ErrExists, v.ID, v.Keys.Epoch, ks.kr.Epoch())
		}
		rotate = rotate || v.Keys.RotateBy > v.Keys.Epoch
	}
	if v.Keys == nil && event != "passphrase change" {
		return meta.Vault{}, fmt.Errorf("%w: vault %s still has a legacy passphrase wrapping; convert it first with coffer vault passphrase change (the same passphrase may be given again)", ErrInvalid, v.ID)
	}
	if edit != nil {
		r, err := edit(&next)
		if err != nil {
			return meta.Vault{}, err
		}
		rotate = rotate || r
	}
	kr := ks.kr
	if rotate {
		if kr, err = kr.Rotate(ks.cfg.Rand); err != nil {
			return meta.Vault{}, err
		}
	}
	next.Epoch = kr.Epoch()
	if err := sealWraps(&next, kr, rotate); err != nil {
		return meta.Vault{}, err
	}
	out, err := svc.UpdateVaultKeys(ctx, v.ID, meta.KeysChange{Revision: rev, Keys: next, Event: event, Reason: reason})
	if err != nil {
		return meta.Vault{}, fmt.Errorf("client: %s of vault %s: %w", event, v.ID, err)
	}
	ks.vault, ks.kr = out, kr
	return out, nil
}

// KeyChange is the result of a key operation: the vault's new record (key wraps
// included, as the caller may see them).
type KeyChange = meta.Vault

// RotateKey starts a new key epoch: a random data key, the keyring sealed again to every
// holder. New chunks are sealed under it; every earlier epoch stays readable and nothing
// is re-encrypted. The agent keeps sealing under the epoch it was opened with: open the
// vault again to write under the new one. Admins and the vault's backup agents; audited.
func (a *Agent) RotateKey(ctx context.Context, reason string) (KeyChange, error) {
	if err := a.check(); err != nil {
		return meta.Vault{}, err
	}
	a.ks.mu.Lock()
	defer a.ks.mu.Unlock()
	return a.ks.change(ctx, "rotate-key", reason, true, nil)
}

// ChangePassphrase replaces every passphrase wrap with one under passphrase (a new
// holder key pair): the old passphrase opens nothing afterwards (its local key cache
// entries stop too). A legacy vault is converted to key wraps. Admins only; audited.
func (a *Agent) ChangePassphrase(ctx context.Context, passphrase []byte, reason string) (KeyChange, error) {
	if err := a.check(); err != nil {
		return meta.Vault{}, err
	}
	a.ks.mu.Lock()
	defer a.ks.mu.Unlock()
	pw, hk, err := passphraseWrap(a.cfg, passphrase)
	if err != nil {
		return meta.Vault{}, err
	}
	v, err := a.ks.change(ctx, "passphrase change", reason, false, func(k *meta.VaultKeys) (bool, error) {
		k.Wraps = append(slices.DeleteFunc(k.Wraps, func(w meta.KeyWrap) bool { return w.Kind == meta.WrapPassphrase }), pw)
		return false, nil
	})
	if err == nil {
		saveKeyCache(a.cfg, v, pw.Identity, hk, passphrase)
	}
	return v, err
}

// AddHostWrap wraps the vault key to host holder's recipient (its identity's public
// half), so that the host opens the vault with its own key and no passphrase. A host
// that already holds a wrap with the same recipient is left as it is; with another
// recipient it is refused (remove the old wrap first). Admins and the vault's backup
// agents; audited.
func (a *Agent) AddHostWrap(ctx context.Context, holder, recipient, reason string) (KeyChange, error) {
	if err := a.check(); err != nil {
		return meta.Vault{}, err
	}
	if err := meta.ValidateAgentName(holder); err != nil {
		return meta.Vault{}, fmt.Errorf("client: add host wrap: %w", err)
	}
	if err := crypt.ValidateRecipient(recipient); err != nil {
		return meta.Vault{}, fmt.Errorf("client: add host wrap: %w", err)
	}
	wid, err := newWrapID(a.cfg.Rand)
	if err != nil {
		return meta.Vault{}, err
	}
	a.ks.mu.Lock()
	defer a.ks.mu.Unlock()
	return a.ks.change(ctx, "add host", reason, false, func(k *meta.VaultKeys) (bool, error) {
		for _, w := range k.Wraps {
			if w.Kind == meta.WrapHost && w.Holder == holder {
				if w.Recipient == recipient {
					return false, nil
				}
				return false, fmt.Errorf("%w: host %q already holds key wrap %s for another key (%s); remove it first (coffer vault keys remove %s)", meta.ErrExists, holder, w.ID, w.Recipient, w.ID)
			}
		}
		k.Wraps = append(k.Wraps, meta.KeyWrap{ID: wid, Kind: meta.WrapHost, Holder: holder, Recipient: recipient})
		return false, nil
	})
}

// RemoveWrap removes the wrap with the given ID. Removing a host's or the platform wrap
// also starts a new key epoch, so that nothing written afterwards is readable to that
// holder. The last wrap is never removed. Admins only; audited.
func (a *Agent) RemoveWrap(ctx context.Context, id, reason string) (KeyChange, error) {
	if err := a.check(); err != nil {
		return meta.Vault{}, err
	}
	a.ks.mu.Lock()
	defer a.ks.mu.Unlock()
	return a.ks.change(ctx, "remove wrap", reason, false, func(k *meta.VaultKeys) (bool, error) {
		w, ok := k.Wrap(id)
		if !ok {
			return false, fmt.Errorf("%w: vault %s has no key wrap %s", meta.ErrNotFound, a.vault.ID, id)
		}
		if len(k.Wraps) == 1 {
			return false, fmt.Errorf("%w: key wrap %s is the vault's last: without it nobody can open the vault", meta.ErrInvalid, id)
		}
		if w.Kind == meta.WrapPlatform {
			return false, fmt.Errorf("%w: key wrap %s is the platform wrap: switch to customer-managed keys instead (coffer vault keys management customer)", meta.ErrInvalid, id)
		}
		k.Wraps = slices.DeleteFunc(k.Wraps, func(x meta.KeyWrap) bool { return x.ID == id })
		return w.Kind == meta.WrapHost, nil
	})
}

// SetManagement switches the vault's key management. To meta.KeyCustomer: the platform
// wrap is removed and a new epoch starts, so the platform cannot decrypt anything
// written afterwards (it could decrypt what came before, and may have kept it). To
// meta.KeyPlatform: the keyring, which only an unwrap gives, is also sealed to the
// platform key. Admins only; audited.
func (a *Agent) SetManagement(ctx context.Context, mode, reason string) (KeyChange, error) {
	if err := a.check(); err != nil {
		return meta.Vault{}, err
	}
	a.ks.mu.Lock()
	defer a.ks.mu.Unlock()
	switch mode {
	case meta.KeyCustomer:
		return a.ks.change(ctx, "key-management customer", reason, false, func(k *meta.VaultKeys) (bool, error) {
			if k.Management == meta.KeyCustomer {
				return false, fmt.Errorf("%w: vault %s is already customer-managed", meta.ErrInvalid, a.vault.ID)
			}
			k.Management = meta.KeyCustomer
			k.Wraps = slices.DeleteFunc(k.Wraps, func(w meta.KeyWrap) bool { return w.Kind == meta.WrapPlatform })
			return true, nil
		})
	case meta.KeyPlatform:
		svc, err := keyService(a.cfg)
		if err != nil {
			return meta.Vault{}, err
		}
		rc, err := svc.PlatformRecipient(ctx)
		if err != nil {
			return meta.Vault{}, fmt.Errorf("client: platform key: %w", err)
		}
		wid, err := newWrapID(a.cfg.Rand)
		if err != nil {
			return meta.Vault{}, err
		}
		return a.ks.change(ctx, "key-management platform", reason, false, func(k *meta.VaultKeys) (bool, error) {
			if k.Management == meta.KeyPlatform {
				return false, fmt.Errorf("%w: vault %s is already platform-managed", meta.ErrInvalid, a.vault.ID)
			}
			k.Management = meta.KeyPlatform
			k.Wraps = append(k.Wraps, meta.KeyWrap{ID: wid, Kind: meta.WrapPlatform, Holder: meta.PlatformHolder, Recipient: rc})
			return false, nil
		})
	}
	return meta.Vault{}, fmt.Errorf("%w: key management %q (want %q or %q)", ErrInvalid, mode, meta.KeyCustomer, meta.KeyPlatform)
}

// KeyEpoch returns the key epoch the agent seals new chunks under.
func (a *Agent) KeyEpoch() uint32 { return a.keys.Generation() }
