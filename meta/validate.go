package meta

import (
	"fmt"

	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/placement"
)

// MaxVaultIDLen bounds a vault ID.
const MaxVaultIDLen = grant.MaxVaultLen

// ValidateVaultID checks that id is a usable vault name: 1..MaxVaultIDLen characters from
// [A-Za-z0-9._-], not starting with '.'. The error wraps ErrInvalid and names the problem.
func ValidateVaultID(id VaultID) error {
	if err := grant.CheckVaultName(string(id)); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// ValidateProfile checks an erasure profile: K >= 1, M >= 0, K+M <= 255.
func ValidateProfile(p placement.Profile) error {
	if p.K < 1 || p.M < 0 || p.K+p.M > 255 {
		return fmt.Errorf("%w: bad erasure profile %d+%d (need k >= 1, m >= 0, k+m <= 255)", ErrInvalid, p.K, p.M)
	}
	return nil
}

// ValidateVault checks a vault before creation: a valid ID, a valid profile and at least
// one non-empty key wrapping. Errors wrap ErrInvalid.
func ValidateVault(v Vault) error {
	if err := ValidateVaultID(v.ID); err != nil {
		return err
	}
	if err := ValidateProfile(v.Profile); err != nil {
		return fmt.Errorf("vault %s: %w", v.ID, err)
	}
	if v.Keys != nil {
		if len(v.KeyWraps) != 0 {
			return fmt.Errorf("%w: vault %s: both legacy key wrappings and a key record", ErrInvalid, v.ID)
		}
		if err := ValidateVaultKeys(*v.Keys); err != nil {
			return fmt.Errorf("vault %s: %w", v.ID, err)
		}
		return nil
	}
	if len(v.KeyWraps) == 0 {
		return fmt.Errorf("%w: vault %s: missing key wraps (at least one wrapped master key is required)", ErrInvalid, v.ID)
	}
	for i, w := range v.KeyWraps {
		if len(w) == 0 {
			return fmt.Errorf("%w: vault %s: key wrap %d is empty", ErrInvalid, v.ID, i)
		}
	}
	return nil
}

// ValidateSnapshot checks the fields of a snapshot to commit: a valid vault ID, a non-zero
// snapshot ID and tree ID, and at least one non-zero reference-list chunk. Errors wrap
// ErrInvalid. It does not check that chunks are stored.
func ValidateSnapshot(s Snapshot) error {
	if err := ValidateVaultID(s.Vault); err != nil {
		return err
	}
	if s.ID.IsZero() {
		return fmt.Errorf("%w: snapshot in vault %s: zero snapshot ID", ErrInvalid, s.Vault)
	}
	if s.Tree.IsZero() {
		return fmt.Errorf("%w: snapshot %s: zero tree ID", ErrInvalid, s.ID.Str())
	}
	if len(s.Refs) == 0 {
		return fmt.Errorf("%w: snapshot %s: no refs (the reference list is required)", ErrInvalid, s.ID.Str())
	}
	for i, r := range s.Refs {
		if r.IsZero() {
			return fmt.Errorf("%w: snapshot %s: reference-list chunk %d is the zero ID", ErrInvalid, s.ID.Str(), i)
		}
	}
	if s.Parent != nil && s.Parent.IsZero() {
		return fmt.Errorf("%w: snapshot %s: zero parent ID", ErrInvalid, s.ID.Str())
	}
	return nil
}

// ValidateMap checks a cluster map's shape (not its epoch): PGCount a power of two, a
// valid profile, nodes sorted by ID with no duplicates or empty IDs/addresses, weights not
// negative. Errors wrap ErrInvalid.
func ValidateMap(m placement.Map) error {
	if m.PGCount == 0 || m.PGCount&(m.PGCount-1) != 0 {
		return fmt.Errorf("%w: cluster map epoch %d: PG count %d is not a power of two", ErrInvalid, m.Epoch, m.PGCount)
	}
	if err := ValidateProfile(m.Profile); err != nil {
		return fmt.Errorf("cluster map epoch %d: %w", m.Epoch, err)
	}
	for i, n := range m.Nodes {
		if n.ID == "" {
			return fmt.Errorf("%w: cluster map epoch %d: node %d has an empty ID", ErrInvalid, m.Epoch, i)
		}
		if n.Addr == "" {
			return fmt.Errorf("%w: cluster map epoch %d: node %s has no address", ErrInvalid, m.Epoch, n.ID)
		}
		if n.Weight < 0 {
			return fmt.Errorf("%w: cluster map epoch %d: node %s has negative weight %g", ErrInvalid, m.Epoch, n.ID, n.Weight)
		}
		if i > 0 && m.Nodes[i-1].ID >= n.ID {
			return fmt.Errorf("%w: cluster map epoch %d: nodes not sorted by ID or duplicated at %s", ErrInvalid, m.Epoch, n.ID)
		}
	}
	return nil
}
