package command

import "github.com/cofferhq/coffer/meta"

// Vault key records (issue 17, steps 1-4): tags 160..179.
const (
	TypeSetVaultKeys Type = 160
	TypeTouchKeyWrap Type = 161
)

// SetVaultKeys replaces a vault's key record (meta.CheckKeysChange decides at apply
// time, against the record's current revision). Audited, without key bytes.
type SetVaultKeys struct {
	Vault  meta.VaultID    `cbor:"vault"`
	Change meta.KeysChange `cbor:"change"`
	By     meta.Principal  `cbor:"by"`
}

// TouchKeyWrap sets a wrap's LastUsed to the entry's cluster time. Not audited (it
// records a use, and changes no access).
type TouchKeyWrap struct {
	Vault meta.VaultID   `cbor:"vault"`
	ID    string         `cbor:"id"`
	By    meta.Principal `cbor:"by"`
}

// Type implements Body.
func (SetVaultKeys) Type() Type { return TypeSetVaultKeys }

// Type implements Body.
func (TouchKeyWrap) Type() Type { return TypeTouchKeyWrap }
