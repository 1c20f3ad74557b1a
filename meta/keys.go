package meta

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Key management modes (VaultKeys.Management), chosen at `coffer init --key-management`.
const (
	// KeyCustomer: only holders the customer controls (passphrases, the vault's hosts,
	// later the customer's KMS) hold wraps. No platform wrap ever exists.
	KeyCustomer = "customer"
	// KeyPlatform: the vault key is also wrapped to the platform key the meta servers
	// hold, so the platform can decrypt the vault (a restore needs an admin, no
	// passphrase).
	KeyPlatform = "platform"
)

// Kinds of key wrap (KeyWrap.Kind). Kinds are append-only.
const (
	// WrapPassphrase: the holder's identity is sealed under a passphrase (Argon2id).
	WrapPassphrase = "passphrase"
	// WrapHost: the holder is one agent host (Holder is its principal); its identity was
	// generated on the host and never leaves it.
	WrapHost = "host"
	// WrapPlatform: the holder is the platform key of the meta servers (Holder
	// "platform"). Only in platform-managed vaults.
	WrapPlatform = "platform"
	// WrapKMS: the holder's identity is sealed by an external KMS key (client/kms):
	// Holder is the key ID, Params[ParamPlugin] the plugin the agent asks and
	// Params[ParamKeyVersion] the key version that encrypted the identity.
	WrapKMS = "kms"
	// WrapEscrow: the holder is an escrow recipient (an age X25519 key kept offline by
	// the organisation), made by `coffer vault keys export --to`; its identity never
	// reaches the cluster. Holder is a label.
	WrapEscrow = "escrow"
)

// Params of a KMS wrap.
const (
	ParamPlugin     = "plugin"
	ParamKeyVersion = "key_version"
)

// PlatformHolder is the Holder of the platform wrap.
const PlatformHolder = "platform"

// Bounds on a vault's key record, so a crafted one cannot make a server or an agent
// allocate without bound.
const (
	MaxKeyWraps        = 256
	maxWrapID          = 32
	maxWrapHolder      = 256
	maxWrapRecipient   = 256
	maxWrapIdentity    = 4 << 10
	maxWrapKeyring     = 256 << 10 // crypt.MaxSealedKeyring
	maxWrapParams      = 16
	maxWrapParamLength = 1024
	// KeyUseInterval is how stale KeyWrap.LastUsed may get before an agent that used the
	// wrap records the use again (one log entry per wrap per interval, at most).
	KeyUseInterval = time.Hour
)

// ActKeys is the permission to change a vault's key record: add wraps and rotate (backup
// agents of the vault too), remove wraps, change passphrases and switch key management
// (admins only, CheckKeysChange). ActPlatformUnwrap lets a caller obtain a
// platform-managed vault's key through the platform wrap (admins only).
const (
	ActKeys           = Action("vault-keys")
	ActPlatformUnwrap = Action("platform-unwrap")
)

// VaultKeys is a vault's key record: the set of wraps of its keyring, one per holder,
// and the key epoch they all hold. The keyring (client/crypt: the master key and the
// random data key of every epoch) exists in the clear only on holders; each wrap is the
// keyring sealed to its holder's X25519 recipient, so anyone may seal a new keyring to
// every holder (a rotation needs no holder's secret) and only the holder opens it.
type VaultKeys struct {
	// Management is KeyCustomer or KeyPlatform.
	Management string `cbor:"management" json:"management"`
	// Epoch is the newest key epoch; every wrap's keyring holds epochs 0..Epoch and new
	// chunks are sealed under Epoch.
	Epoch uint32 `cbor:"epoch" json:"epoch"`
	// RotateBy, when greater than Epoch, says that a holder lost its wrap without a
	// rotation (a host whose certificate was revoked): the next agent that opens the
	// vault for writing starts epoch RotateBy before it seals anything.
	RotateBy uint32 `cbor:"rotate_by,omitempty" json:"rotate_by,omitempty"`
	// Revision counts changes (set by the FSM); a change names the revision it read
	// (compare-and-swap).
	Revision uint64    `cbor:"revision" json:"revision"`
	Wraps    []KeyWrap `cbor:"wraps" json:"wraps"`
}

// KeyWrap is one holder's wrap of the vault keyring. Nothing in it is secret to the
// cluster except in the sense that Identity and Keyring are ciphertexts: the cluster
// cannot open them (platform wraps excepted, by design).
type KeyWrap struct {
	// ID names the wrap (chosen by the client: 16 hex digits).
	ID     string `cbor:"id" json:"id"`
	Kind   string `cbor:"kind" json:"kind"`
	Holder string `cbor:"holder" json:"holder"`
	// Recipient is the holder's public key ("age1..."), which new keyrings are sealed to.
	Recipient string `cbor:"recipient" json:"recipient"`
	// Identity is the holder's private key sealed for the holder (a passphrase wrap:
	// under Argon2id of the passphrase; a KMS wrap: by the KMS); empty for hosts and the
	// platform, whose keys live on the host and the meta servers.
	Identity []byte `cbor:"identity,omitempty" json:"-"`
	// Keyring is the age ciphertext of the keyring (epochs 0..Epoch) to Recipient.
	Keyring []byte `cbor:"keyring" json:"-"`
	// Params are non-secret, kind-specific settings (a KMS key version, a plugin name).
	Params map[string]string `cbor:"params,omitempty" json:"params,omitempty"`
	// Created and CreatedBy are set by the FSM (cluster time, principal).
	Created   time.Time `cbor:"created" json:"created"`
	CreatedBy string    `cbor:"created_by" json:"created_by"`
	// LastUsed is the cluster time a holder last reported unwrapping it (to within
	// KeyUseInterval); zero: never.
	LastUsed time.Time `cbor:"last_used,omitempty" json:"last_used,omitzero"`
}

// Wrap returns the wrap with the given ID.
func (k *VaultKeys) Wrap(id string) (KeyWrap, bool) {
	i := slices.IndexFunc(k.Wraps, func(w KeyWrap) bool { return w.ID == id })
	if i < 0 {
		return KeyWrap{}, false
	}
	return k.Wraps[i], true
}

// Clone returns a deep copy.
func (k *VaultKeys) Clone() *VaultKeys {
	if k == nil {
		return nil
	}
	c := *k
	c.Wraps = slices.Clone(k.Wraps)
	for i := range c.Wraps {
		w := &c.Wraps[i]
		w.Identity = slices.Clone(w.Identity)
		w.Keyring = slices.Clone(w.Keyring)
		if w.Params != nil {
			p := make(map[string]string, len(w.Params))
			for k, v := range w.Params {
				p[k] = v
			}
			w.Params = p
		}
	}
	return &c
}

// ValidateVaultKeys checks a key record's shape: a known management mode, 1..MaxKeyWraps
// wraps with unique IDs, known kinds, bounded fields, one wrap per host, and a platform
// wrap exactly when the vault is platform-managed. Errors wrap ErrInvalid.
func ValidateVaultKeys(k VaultKeys) error {
	if k.Management != KeyCustomer && k.Management != KeyPlatform {
		return fmt.Errorf("%w: key management %q (want %q or %q)", ErrInvalid, k.Management, KeyCustomer, KeyPlatform)
	}
	if len(k.Wraps) == 0 || len(k.Wraps) > MaxKeyWraps {
		return fmt.Errorf("%w: %d key wraps (1..%d): a vault key nobody can unwrap is lost", ErrInvalid, len(k.Wraps), MaxKeyWraps)
	}
	ids := map[string]bool{}
	hosts := map[string]bool{}
	platform := 0
	for _, w := range k.Wraps {
		if err := validateWrap(w); err != nil {
			return err
		}
		if ids[w.ID] {
			return fmt.Errorf("%w: key wrap ID %s appears twice", ErrInvalid, w.ID)
		}
		ids[w.ID] = true
		switch w.Kind {
		case WrapHost:
			if hosts[w.Holder] {
				return fmt.Errorf("%w: host %q holds two key wraps (one per host)", ErrInvalid, w.Holder)
			}
			hosts[w.Holder] = true
		case WrapPlatform:
			platform++
		}
	}
	switch {
	case k.Management == KeyCustomer && platform > 0:
		return fmt.Errorf("%w: a customer-managed vault has no platform wrap", ErrInvalid)
	case k.Management == KeyPlatform && platform != 1:
		return fmt.Errorf("%w: a platform-managed vault has exactly one platform wrap, not %d", ErrInvalid, platform)
	}
	return nil
}

func validateWrap(w KeyWrap) error {
	if w.ID == "" || len(w.ID) > maxWrapID || strings.Trim(w.ID, "0123456789abcdef") != "" {
		return fmt.Errorf("%w: key wrap ID %.40q: want 1..%d lower-case hex digits", ErrInvalid, w.ID, maxWrapID)
	}
	switch w.Kind {
	case WrapPassphrase, WrapHost, WrapEscrow:
	case WrapKMS:
		if w.Params[ParamPlugin] == "" || w.Params[ParamKeyVersion] == "" {
			return fmt.Errorf("%w: key wrap %s: a kms wrap names its plugin and key version (params %q, %q)", ErrInvalid, w.ID, ParamPlugin, ParamKeyVersion)
		}
	case WrapPlatform:
		if w.Holder != PlatformHolder {
			return fmt.Errorf("%w: key wrap %s: the platform wrap's holder is %q, not %.40q", ErrInvalid, w.ID, PlatformHolder, w.Holder)
		}
	default:
		return fmt.Errorf("%w: key wrap %s: unknown kind %.40q", ErrInvalid, w.ID, w.Kind)
	}
	switch {
	case w.Holder == "" || len(w.Holder) > maxWrapHolder:
		return fmt.Errorf("%w: key wrap %s: holder of %d bytes (1..%d)", ErrInvalid, w.ID, len(w.Holder), maxWrapHolder)
	case !strings.HasPrefix(w.Recipient, "age1") || len(w.Recipient) > maxWrapRecipient:
		return fmt.Errorf("%w: key wrap %s: recipient %.40q is not an age recipient", ErrInvalid, w.ID, w.Recipient)
	case len(w.Keyring) == 0 || len(w.Keyring) > maxWrapKeyring:
		return fmt.Errorf("%w: key wrap %s: sealed keyring of %d bytes (1..%d)", ErrInvalid, w.ID, len(w.Keyring), maxWrapKeyring)
	case len(w.Identity) > maxWrapIdentity:
		return fmt.Errorf("%w: key wrap %s: sealed identity of %d bytes (at most %d)", ErrInvalid, w.ID, len(w.Identity), maxWrapIdentity)
	case (w.Kind == WrapPassphrase || w.Kind == WrapKMS) != (len(w.Identity) > 0):
		return fmt.Errorf("%w: key wrap %s: a %s wrap %s a sealed identity", ErrInvalid, w.ID, w.Kind,
			map[bool]string{true: "needs", false: "has no"}[w.Kind == WrapPassphrase || w.Kind == WrapKMS])
	case len(w.Params) > maxWrapParams:
		return fmt.Errorf("%w: key wrap %s: %d params (at most %d)", ErrInvalid, w.ID, len(w.Params), maxWrapParams)
	}
	for k, v := range w.Params {
		if len(k) == 0 || len(k)+len(v) > maxWrapParamLength {
			return fmt.Errorf("%w: key wrap %s: param %.40q: empty name or over %d bytes", ErrInvalid, w.ID, k, maxWrapParamLength)
		}
	}
	return nil
}

// KeysChange is a proposed new key record for a vault.
type KeysChange struct {
	// Revision is the VaultKeys.Revision the change was computed from (0 for a vault
	// that still has only legacy passphrase wrappings, Vault.KeyWraps).
	Revision uint64 `cbor:"revision"`
	// Keys is the new record (Revision, Created, CreatedBy and LastUsed are the FSM's).
	Keys VaultKeys `cbor:"keys"`
	// Event names the change for the audit log: "rotate-key", "passphrase change",
	// "add host", "remove wrap", "key-management platform", ...
	Event string `cbor:"event"`
	// Reason is the operator's reason, for the audit log.
	Reason string `cbor:"reason,omitempty"`
}

// CheckKeysChange decides whether principal p may replace vault's key record old (nil: a
// vault with only legacy wrappings) by next. It checks, besides ValidateVaultKeys:
//
//   - the epoch stays or grows by one, and reaches old.RotateBy when a rotation is due;
//   - a wrap that is kept keeps its kind, holder, recipient and sealed identity (only
//     its sealed keyring may change, to add an epoch);
//   - removing a host or the platform wrap (a revocation, a switch to customer
//     management) comes with a new epoch, so nothing written afterwards is readable to
//     the removed holder;
//   - removing any wrap, switching key management and converting a legacy vault are
//     admin decisions: a backup agent of the vault may only add wraps and rotate, so a
//     compromised host cannot lock the other holders out.
//
// Errors wrap ErrDenied or ErrInvalid and name the rule.
func CheckKeysChange(p Principal, vault VaultID, old *VaultKeys, next VaultKeys) error {
	if err := p.Authorize(ActKeys, vault); err != nil {
		return err
	}
	if err := ValidateVaultKeys(next); err != nil {
		return fmt.Errorf("vault %s: %w", vault, err)
	}
	admin := p.Role == RoleAdmin || p.Role == RoleSystem
	if old == nil {
		if !admin {
			return fmt.Errorf("%w: %s may not convert vault %s's legacy passphrase wrapping to key wraps (an admin does, with coffer vault rotate-key or coffer vault passphrase change)", ErrDenied, p, vault)
		}
		if next.Epoch > 1 {
			return fmt.Errorf("%w: vault %s: epoch %d; a legacy vault starts at epoch 0 and may rotate once (to 1)", ErrInvalid, vault, next.Epoch)
		}
		return nil
	}
	if next.Epoch != old.Epoch && next.Epoch != old.Epoch+1 {
		return fmt.Errorf("%w: vault %s: epoch %d after %d (an epoch stays, or grows by one)", ErrInvalid, vault, next.Epoch, old.Epoch)
	}
	if old.RotateBy > old.Epoch && next.Epoch < old.RotateBy {
		return fmt.Errorf("%w: vault %s: a rotation to epoch %d is due (a holder was removed); this change keeps epoch %d", ErrInvalid, vault, old.RotateBy, next.Epoch)
	}
	if next.Management != old.Management && !admin {
		return fmt.Errorf("%w: %s may not switch vault %s's key management (admins only)", ErrDenied, p, vault)
	}
	for _, w := range old.Wraps {
		n, kept := next.Wrap(w.ID)
		if kept {
			if n.Kind != w.Kind || n.Holder != w.Holder {
				return fmt.Errorf("%w: vault %s: key wrap %s keeps its ID but changes its kind or holder (remove it and add another)", ErrInvalid, vault, w.ID)
			}
			if n.Recipient != w.Recipient || !slices.Equal(n.Identity, w.Identity) || !maps.Equal(n.Params, w.Params) {
				if !rekeyed(w, n) {
					return fmt.Errorf("%w: vault %s: key wrap %s keeps its ID but changes its recipient, identity or params (remove it and add another)", ErrInvalid, vault, w.ID)
				}
				if !admin {
					return fmt.Errorf("%w: %s may not re-wrap kms wrap %s of vault %s (admins only)", ErrDenied, p, w.ID, vault)
				}
			}
			continue
		}
		if !admin {
			return fmt.Errorf("%w: %s may not remove key wrap %s (%s %q) of vault %s (admins only)", ErrDenied, p, w.ID, w.Kind, w.Holder, vault)
		}
		if (w.Kind == WrapHost || w.Kind == WrapPlatform) && next.Epoch == old.Epoch {
			return fmt.Errorf("%w: vault %s: removing %s wrap %s (%q) needs a new key epoch, so that data written afterwards is unreadable to it", ErrInvalid, vault, w.Kind, w.ID, w.Holder)
		}
	}
	return nil
}

// ApplyKeysChange applies c to v for principal p at cluster time now (what the FSM does
// with a SetVaultKeys entry): the revision check (ErrExists when v's record has moved
// on), CheckKeysChange, then the record the servers keep: kept wraps keep their Created,
// CreatedBy and LastUsed, new ones get now and p; the revision grows by one and a due
// rotation is cleared once reached; legacy wrappings go. It returns the audit target
// (epochs, wraps added and removed; never key bytes). v is changed only on success.
func ApplyKeysChange(p Principal, v *Vault, c KeysChange, now time.Time) (string, error) {
	if v.Deleted != nil {
		return "", fmt.Errorf("%w: vault %s is deleted; its keys change no more", ErrInvalid, v.ID)
	}
	var rev uint64
	if v.Keys != nil {
		rev = v.Keys.Revision
	}
	if c.Revision != rev {
		return "", fmt.Errorf("%w: vault %s's key record is at revision %d, the change was made from %d (reread and retry)", ErrExists, v.ID, rev, c.Revision)
	}
	next := *c.Keys.Clone()
	if err := CheckKeysChange(p, v.ID, v.Keys, next); err != nil {
		return "", err
	}
	old := v.Keys
	if old == nil {
		old = &VaultKeys{Management: next.Management}
	}
	var added, removed, rewrapped []string
	for i := range next.Wraps {
		w := &next.Wraps[i]
		if o, ok := old.Wrap(w.ID); ok {
			w.Created, w.CreatedBy, w.LastUsed = o.Created, o.CreatedBy, o.LastUsed
			if w.Recipient != o.Recipient || !slices.Equal(w.Identity, o.Identity) || !maps.Equal(w.Params, o.Params) {
				rewrapped = append(rewrapped, fmt.Sprintf("kms wrap %s (key %s version %s→%s)", w.ID, w.Holder, o.Params[ParamKeyVersion], w.Params[ParamKeyVersion]))
			}
			continue
		}
		w.Created, w.CreatedBy, w.LastUsed = now, p.Name, time.Time{}
		added = append(added, describeWrap(*w))
	}
	for _, w := range old.Wraps {
		if _, ok := next.Wrap(w.ID); !ok {
			removed = append(removed, describeWrap(w))
		}
	}
	next.Revision = rev + 1
	next.RotateBy = old.RotateBy
	if next.Epoch >= next.RotateBy {
		next.RotateBy = 0
	}
	target := fmt.Sprintf("epoch %d→%d, management %s", old.Epoch, next.Epoch, next.Management)
	if v.Keys == nil {
		target += fmt.Sprintf("; %d legacy passphrase wrapping(s) replaced", len(v.KeyWraps))
	}
	if len(added) > 0 {
		target += "; added " + strings.Join(added, ", ")
	}
	if len(removed) > 0 {
		target += "; removed " + strings.Join(removed, ", ")
	}
	if len(rewrapped) > 0 {
		target += "; re-wrapped " + strings.Join(rewrapped, ", ")
	}
	v.Keys, v.KeyWraps = &next, nil
	return target, nil
}

// rekeyed reports whether kms wrap n is w re-wrapped under another version of the same
// KMS key (a key-version rotation, `coffer vault keys rotate-kms`): same holder and
// plugin, a new identity, recipient or key version.
func rekeyed(w, n KeyWrap) bool {
	return w.Kind == WrapKMS && n.Kind == WrapKMS && n.Holder == w.Holder && n.Params[ParamPlugin] == w.Params[ParamPlugin]
}

func describeWrap(w KeyWrap) string {
	if w.Kind == WrapKMS {
		return fmt.Sprintf("kms wrap %s (key %s version %s, plugin %s)", w.ID, w.Holder, w.Params[ParamKeyVersion], w.Params[ParamPlugin])
	}
	return fmt.Sprintf("%s wrap %s (%s)", w.Kind, w.ID, w.Holder)
}

// InitVaultKeys sets what the servers own in a new vault's key record: revision 0, no
// rotation due, and every wrap created now by principal by (not yet used).
func InitVaultKeys(v *Vault, by string, now time.Time) {
	if v.Keys == nil {
		return
	}
	v.Keys = v.Keys.Clone()
	v.Keys.Revision, v.Keys.RotateBy = 0, 0
	for i := range v.Keys.Wraps {
		w := &v.Keys.Wraps[i]
		w.Created, w.CreatedBy, w.LastUsed = now, by, time.Time{}
	}
}

// RemoveHostWraps returns k without the host wraps of principal and with a rotation due
// (RotateBy = Epoch+1), and whether any was removed: what a certificate revocation of
// that principal does to every vault. A vault left with no wrap keeps none (it cannot
// happen while a passphrase wrap exists; the FSM refuses nothing for it).
func RemoveHostWraps(k VaultKeys, principal string) (VaultKeys, bool) {
	out := slices.DeleteFunc(slices.Clone(k.Wraps), func(w KeyWrap) bool { return w.Kind == WrapHost && w.Holder == principal })
	if len(out) == len(k.Wraps) {
		return k, false
	}
	k.Wraps = out
	k.RotateBy = max(k.RotateBy, k.Epoch+1)
	return k, true
}

// KeyService changes vault key records. meta/server implements it, metarpc carries it.
// Every change is authorized by the caller's principal and audited; key bytes never
// appear in the audit log or in any reply to a principal that may not see key wraps.
type KeyService interface {
	// UpdateVaultKeys replaces vault's key record with c.Keys if its revision is still
	// c.Revision (else ErrExists: reread and redo), as CheckKeysChange allows, and
	// returns the vault. A platform wrap must be sealed to this cluster's platform key
	// (PlatformRecipient).
	UpdateVaultKeys(ctx context.Context, vault VaultID, c KeysChange) (Vault, error)
	// TouchKeyWrap records that the caller unwrapped wrap id of vault now (cluster
	// time); a no-op when LastUsed is within KeyUseInterval. Principals that may read
	// the vault.
	TouchKeyWrap(ctx context.Context, vault VaultID, id string) error
	// PlatformRecipient returns the public half of the cluster's platform key, or
	// ErrUnavailable when the meta servers hold none.
	PlatformRecipient(ctx context.Context) (string, error)
	// PlatformUnwrap opens a platform-managed vault's platform wrap with the platform key
	// and returns its keyring sealed to recipient (an age X25519 recipient the caller
	// made for this call): restore without a passphrase. Admins only; audited. ErrInvalid
	// for a customer-managed vault, ErrUnavailable without a platform key.
	PlatformUnwrap(ctx context.Context, vault VaultID, recipient string) ([]byte, error)
}
