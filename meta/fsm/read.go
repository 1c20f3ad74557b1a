package fsm

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// Now returns the cluster clock: the latest leader stamp applied (zero time before any).
func (f *FSM) Now() time.Time {
	c := f.clock.Load()
	if c == 0 {
		return time.Time{}
	}
	return time.Unix(0, c).UTC()
}

// Vault returns one vault or an error wrapping meta.ErrNotFound.
func (f *FSM) Vault(id meta.VaultID) (meta.Vault, error) {
	var v meta.Vault
	ok, err := f.getValue(vaultKey(id), &v)
	if err == nil && !ok {
		err = fmt.Errorf("fsm: vault %s: %w", id, meta.ErrNotFound)
	}
	return v, err
}

// Vaults returns every vault sorted by ID.
func (f *FSM) Vaults() ([]meta.Vault, error) {
	return scanAll[meta.Vault](f, prefixVault) // keys are "v/<id>", so iteration order is ID order
}

// GetSnapshot returns one snapshot or an error wrapping meta.ErrNotFound. (Snapshot is
// raft's state capture.)
func (f *FSM) GetSnapshot(vault meta.VaultID, id meta.SnapshotID) (meta.Snapshot, error) {
	var s meta.Snapshot
	ok, err := f.getValue(snapshotKey(vault, id), &s)
	if err == nil && !ok {
		err = fmt.Errorf("fsm: snapshot %s in vault %s: %w", id.Str(), vault, meta.ErrNotFound)
	}
	return s, err
}

// Snapshots returns a vault's snapshots sorted by commit time, then ID. A vault with no
// snapshots (or that does not exist) gives an empty list.
func (f *FSM) Snapshots(vault meta.VaultID) ([]meta.Snapshot, error) {
	out, err := scanAll[meta.Snapshot](f, snapshotPrefix(vault))
	slices.SortStableFunc(out, func(a, b meta.Snapshot) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return cmp.Compare(string(a.ID[:]), string(b.ID[:]))
	})
	return out, err
}

// ClusterMap returns the current map; ok is false when none was ever set.
func (f *FSM) ClusterMap() (m placement.Map, ok bool, err error) {
	h, err := f.acquire()
	if err != nil {
		return m, false, err
	}
	defer func() { _ = h.unref() }()
	return f.readMap(h.db)
}

func (f *FSM) readMap(r getter) (placement.Map, bool, error) {
	var m placement.Map
	v, ok, err := getCopy(r, keyMap)
	if err != nil || !ok {
		return m, ok, err
	}
	if err := f.codec.Unmarshal(v, &m); err != nil {
		return m, false, fmt.Errorf("fsm: decode cluster map: %w", err)
	}
	return m, true, nil
}

func (f *FSM) getValue(key string, v any) (bool, error) {
	h, err := f.acquire()
	if err != nil {
		return false, err
	}
	defer func() { _ = h.unref() }()
	b, ok, err := getCopy(h.db, key)
	if err != nil || !ok {
		return ok, err
	}
	if err := f.codec.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("fsm: decode %q: %w", key, err)
	}
	return true, nil
}

// scan calls fn with each value under prefix in key order.
func (f *FSM) scan(prefix string, fn func(val []byte) error) error {
	h, err := f.acquire()
	if err != nil {
		return err
	}
	defer func() { _ = h.unref() }()
	return scanIn(h.db, prefix, fn)
}

// iterable is a *pebble.DB or an indexed *pebble.Batch.
type iterable interface {
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

// scanIn calls fn with each value under prefix in r, in key order.
func scanIn(r iterable, prefix string, fn func(val []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("fsm: scan %q: %w", prefix, err)
	}
	for it.First(); it.Valid(); it.Next() {
		val, err := it.ValueAndErr()
		if err == nil {
			err = fn(val)
		}
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("fsm: scan %q at %q: %w", prefix, it.Key(), err)
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("fsm: scan %q: %w", prefix, err)
	}
	return nil
}

// scanAll decodes every value under prefix as a T, in key order.
func scanAll[T any](f *FSM, prefix string) ([]T, error) {
	h, err := f.acquire()
	if err != nil {
		return nil, err
	}
	defer func() { _ = h.unref() }()
	return decodeAll[T](f, h.db, prefix)
}

// decodeAll decodes every value under prefix in r as a T, in key order. With a batch,
// it sees the writes of earlier entries of the same batch.
func decodeAll[T any](f *FSM, r iterable, prefix string) ([]T, error) {
	var out []T
	err := scanIn(r, prefix, func(val []byte) error {
		var v T
		if err := f.codec.Unmarshal(val, &v); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// deleteWhere decodes every record under prefix in b as a T and removes, with del, each
// that old reports; it returns how many went. Every record is decoded, in key order,
// before the first is removed.
func deleteWhere[T any](f *FSM, b *pebble.Batch, prefix string, old func(T) bool, del func(T) error) (int, error) {
	all, err := decodeAll[T](f, b, prefix)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, v := range all {
		if !old(v) {
			continue
		}
		if err := del(v); err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
}

// prefixEnd returns the smallest key above every key starting with prefix.
func prefixEnd(prefix string) []byte {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return b[:i+1]
		}
	}
	return nil
}
