package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta"
)

// Key escrow (issue 17 step 5): an organisation that keeps its vault key in a KMS also
// keeps an offline way back in. ExportEscrow adds an escrow wrap for an age recipient
// whose identity the organisation keeps offline (so every later key epoch is sealed to it
// too) and returns a bundle sealed to that recipient: the keyring and every wrap of the
// vault (client/FORMAT.md, "Escrow bundle"). ImportEscrow, with the recipient's identity,
// opens the vault and puts back the passphrase, KMS and escrow wraps the bundle holds
// that the vault lost.

// EscrowFormat names the bundle format (its "format" field).
const EscrowFormat = "coffer-escrow-v1"

// MaxEscrowBundle bounds a sealed escrow bundle (MaxKeyWraps wraps of a few KiB each and
// a keyring).
const MaxEscrowBundle = 8 << 20

// escrowBundle is the plaintext of an escrow bundle (JSON).
type escrowBundle struct {
	Format     string       `json:"format"`
	Vault      string       `json:"vault"`
	Created    time.Time    `json:"created"`
	Management string       `json:"management"`
	Epoch      uint32       `json:"epoch"`
	Keyring    []byte       `json:"keyring"`
	Wraps      []escrowWrap `json:"wraps"`
}

// escrowWrap is one wrap as the bundle keeps it: everything but its sealed keyring, which
// an import seals again with the vault's current keyring.
type escrowWrap struct {
	ID        string            `json:"id"`
	Kind      string            `json:"kind"`
	Holder    string            `json:"holder"`
	Recipient string            `json:"recipient"`
	Identity  []byte            `json:"identity,omitempty"`
	Params    map[string]string `json:"params,omitempty"`
}

// EscrowImport says what ImportEscrow did.
type EscrowImport struct {
	Vault meta.Vault // the vault's key record afterwards
	// Added and Skipped describe the bundle's wraps that were put back, and those that
	// were not (already present, or host wraps: a host adds its own wrap again, and a
	// revoked host must not get one back).
	Added, Skipped []string
}

// ExportEscrow ensures the vault has an escrow wrap for recipient (label names its
// holder, default "escrow") and returns the escrow bundle sealed to recipient. Every
// export is audited ("vault keys escrow export"). Admins and the vault's backup agents.
func (a *Agent) ExportEscrow(ctx context.Context, recipient, label, reason string) ([]byte, KeyChange, error) {
	if err := a.check(); err != nil {
		return nil, meta.Vault{}, err
	}
	if err := crypt.ValidateRecipient(recipient); err != nil {
		return nil, meta.Vault{}, fmt.Errorf("client: escrow export: %w", err)
	}
	if label == "" {
		label = meta.WrapEscrow
	}
	wid, err := newWrapID(a.cfg.Rand)
	if err != nil {
		return nil, meta.Vault{}, err
	}
	a.ks.mu.Lock()
	defer a.ks.mu.Unlock()
	v, err := a.ks.change(ctx, "escrow export", reason, false, func(k *meta.VaultKeys) (bool, error) {
		if !slices.ContainsFunc(k.Wraps, func(w meta.KeyWrap) bool { return w.Recipient == recipient }) {
			k.Wraps = append(k.Wraps, meta.KeyWrap{ID: wid, Kind: meta.WrapEscrow, Holder: label, Recipient: recipient})
		}
		return false, nil
	})
	if err != nil {
		return nil, meta.Vault{}, err
	}
	if v.Keys == nil {
		return nil, meta.Vault{}, fmt.Errorf("client: escrow export of vault %s: %w: the reply holds no key record", v.ID, ErrInvalid)
	}
	ring, err := a.ks.kr.MarshalBinary()
	if err != nil {
		return nil, meta.Vault{}, err
	}
	defer clear(ring)
	b := escrowBundle{Format: EscrowFormat, Vault: string(v.ID), Created: a.cfg.Now().UTC(), Management: v.Keys.Management,
		Epoch: v.Keys.Epoch, Keyring: ring}
	for _, w := range v.Keys.Wraps {
		b.Wraps = append(b.Wraps, escrowWrap{ID: w.ID, Kind: w.Kind, Holder: w.Holder, Recipient: w.Recipient, Identity: w.Identity, Params: w.Params})
	}
	plain, err := json.Marshal(b)
	if err != nil {
		return nil, meta.Vault{}, fmt.Errorf("client: escrow export: %w", err)
	}
	defer clear(plain)
	sealed, err := crypt.SealTo(recipient, plain)
	if err != nil {
		return nil, meta.Vault{}, fmt.Errorf("client: escrow export: %w", err)
	}
	return sealed, v, nil
}

// openEscrow decrypts and checks a bundle of vault.
func openEscrow(sealed []byte, vault meta.VaultID, id *crypt.Identity) (*escrowBundle, *crypt.Keyring, error) {
	plain, err := crypt.OpenSealedMax(sealed, id, MaxEscrowBundle)
	if err != nil {
		return nil, nil, fmt.Errorf("client: escrow bundle: %w", err)
	}
	defer clear(plain)
	var b escrowBundle
	d := json.NewDecoder(bytes.NewReader(plain))
	d.DisallowUnknownFields()
	if err := d.Decode(&b); err != nil {
		return nil, nil, fmt.Errorf("client: escrow bundle: %w: %v", ErrInvalid, err)
	}
	if b.Format != EscrowFormat {
		return nil, nil, fmt.Errorf("client: escrow bundle: %w: format %.40q, want %q", ErrInvalid, b.Format, EscrowFormat)
	}
	if b.Vault != string(vault) {
		return nil, nil, fmt.Errorf("client: escrow bundle: %w: it is vault %.80q's, not %q's", ErrInvalid, b.Vault, vault)
	}
	if len(b.Wraps) > meta.MaxKeyWraps {
		return nil, nil, fmt.Errorf("client: escrow bundle: %w: %d wraps, at most %d", ErrInvalid, len(b.Wraps), meta.MaxKeyWraps)
	}
	kr, err := crypt.ParseKeyring(b.Keyring, string(vault))
	clear(b.Keyring)
	if err != nil {
		return nil, nil, fmt.Errorf("client: escrow bundle: %w", err)
	}
	return &b, kr, nil
}

// ImportEscrow puts back the key wraps of an escrow bundle of vault that the vault no
// longer holds, with id, the identity of the recipient the bundle was exported to. The
// vault's keyring comes from its escrow wrap for id when it still has one (so key epochs
// started after the export are kept), else from the bundle, which then must hold the
// vault's current epoch. Passphrase, KMS and escrow wraps are put back with their IDs and
// sealed identities (the passphrase of the export opens the vault again, and so does the
// KMS key version of the export while the KMS has it); host wraps are not. Admins and the
// vault's backup agents; audited ("vault keys escrow import").
func ImportEscrow(ctx context.Context, cfg Config, vault meta.VaultID, sealed []byte, id *crypt.Identity, reason string) (EscrowImport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return EscrowImport{}, err
	}
	b, bkr, err := openEscrow(sealed, vault, id)
	if err != nil {
		return EscrowImport{}, err
	}
	v, err := cfg.Meta.GetVault(ctx, vault)
	if err != nil {
		return EscrowImport{}, fmt.Errorf("client: escrow import into vault %s: %w", vault, err)
	}
	if v.Keys == nil {
		return EscrowImport{}, fmt.Errorf("client: escrow import into vault %s: %w: the vault has no key wraps (it, or this agent's view of it, is legacy)", vault, ErrInvalid)
	}
	kr := bkr
	if i := slices.IndexFunc(v.Keys.Wraps, func(w meta.KeyWrap) bool { return w.Recipient == id.Recipient() }); i >= 0 {
		w := v.Keys.Wraps[i]
		if kr, err = crypt.OpenKeyring(w.Keyring, string(vault), id); err != nil {
			return EscrowImport{}, fmt.Errorf("client: escrow import into vault %s: %s wrap %s: %w", vault, w.Kind, w.ID, err)
		}
		if kr.Master != bkr.Master {
			return EscrowImport{}, fmt.Errorf("client: escrow import into vault %s: %w: the bundle holds another master key than the vault", vault, ErrInvalid)
		}
	} else if bkr.Epoch() != v.Keys.Epoch {
		return EscrowImport{}, fmt.Errorf("client: escrow import into vault %s: %w: the bundle holds key epochs up to %d, the vault is at %d, and the vault keeps no wrap for %s: the later epochs cannot be opened",
			vault, ErrNoWrap, bkr.Epoch(), v.Keys.Epoch, id.Recipient())
	}
	if kr.Epoch() != v.Keys.Epoch {
		return EscrowImport{}, fmt.Errorf("client: escrow import into vault %s: %w: the escrow wrap holds epochs up to %d, the vault is at %d", vault, ErrInvalid, kr.Epoch(), v.Keys.Epoch)
	}
	var out EscrowImport
	ks := &keyState{cfg: cfg, vault: v, kr: kr}
	nv, err := ks.change(ctx, "escrow import", reason, false, func(k *meta.VaultKeys) (bool, error) {
		out.Added, out.Skipped = nil, nil
		for _, w := range b.Wraps {
			desc := fmt.Sprintf("%s wrap %s (%s)", w.Kind, w.ID, w.Holder)
			switch {
			case w.Kind != meta.WrapPassphrase && w.Kind != meta.WrapKMS && w.Kind != meta.WrapEscrow:
				out.Skipped = append(out.Skipped, desc+": a "+w.Kind+" wrap is not imported")
				continue
			case slices.ContainsFunc(k.Wraps, func(x meta.KeyWrap) bool { return x.ID == w.ID || x.Recipient == w.Recipient }):
				out.Skipped = append(out.Skipped, desc+": the vault holds it")
				continue
			}
			k.Wraps = append(k.Wraps, meta.KeyWrap{ID: w.ID, Kind: w.Kind, Holder: w.Holder, Recipient: w.Recipient, Identity: w.Identity, Params: w.Params})
			out.Added = append(out.Added, desc)
		}
		if len(out.Added) == 0 {
			return false, errNothingToImport
		}
		return false, nil
	})
	if errors.Is(err, errNothingToImport) {
		out.Vault = v
		return out, nil
	}
	if err != nil {
		return EscrowImport{}, err
	}
	out.Vault = nv
	return out, nil
}

// errNothingToImport stops an import that would change nothing. (immutable)
var errNothingToImport = errors.New("client: nothing to import")
