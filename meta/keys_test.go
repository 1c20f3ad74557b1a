package meta

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func testWrap(id, kind, holder string) KeyWrap {
	w := KeyWrap{ID: id, Kind: kind, Holder: holder, Recipient: "age1" + id, Keyring: []byte{1}}
	if kind == WrapPassphrase {
		w.Identity = []byte{2}
	}
	return w
}

func testKeys() VaultKeys {
	return VaultKeys{Management: KeyCustomer, Epoch: 1, Revision: 3, Wraps: []KeyWrap{
		testWrap("aa", WrapPassphrase, WrapPassphrase), testWrap("bb", WrapHost, "web01"),
	}}
}

// TestCheckKeysChange holds the rules of key changes: agents add and rotate only, a
// host's removal comes with a new epoch, kept wraps keep their holder, customer vaults
// never get a platform wrap, and a due rotation must happen.
func TestCheckKeysChange(t *testing.T) {
	admin := Principal{Name: "ops", Role: RoleAdmin}
	agent := Principal{Name: "web01", Role: RoleBackupAgent, Vaults: []VaultID{"v"}}
	other := Principal{Name: "web09", Role: RoleBackupAgent, Vaults: []VaultID{"w"}}
	restore := Principal{Name: "r", Role: RoleRestoreOperator}
	old := testKeys()
	with := func(f func(k *VaultKeys)) VaultKeys {
		k := *old.Clone()
		f(&k)
		return k
	}
	rotate := with(func(k *VaultKeys) { k.Epoch = 2 })
	add := with(func(k *VaultKeys) { k.Wraps = append(k.Wraps, testWrap("cc", WrapHost, "web02")) })
	dropHost := with(func(k *VaultKeys) { k.Wraps = k.Wraps[:1] })
	dropHostRotate := with(func(k *VaultKeys) { k.Wraps, k.Epoch = k.Wraps[:1], 2 })
	for _, tc := range []struct {
		name string
		p    Principal
		next VaultKeys
		want error
	}{
		{"agent rotates", agent, rotate, nil},
		{"agent adds a host", agent, add, nil},
		{"agent of another vault", other, rotate, ErrDenied},
		{"restore operator", restore, rotate, ErrDenied},
		{"agent removes a wrap", agent, dropHostRotate, ErrDenied},
		{"admin removes a host without rotating", admin, dropHost, ErrInvalid},
		{"admin removes a host and rotates", admin, dropHostRotate, nil},
		{"epoch skips", admin, with(func(k *VaultKeys) { k.Epoch = 3 }), ErrInvalid},
		{"epoch goes back", admin, with(func(k *VaultKeys) { k.Epoch = 0 }), ErrInvalid},
		{"kept wrap changes recipient", admin, with(func(k *VaultKeys) { k.Wraps[1].Recipient = "age1evil" }), ErrInvalid},
		{"platform wrap in a customer vault", admin, with(func(k *VaultKeys) { k.Wraps = append(k.Wraps, testWrap("cc", WrapPlatform, PlatformHolder)) }), ErrInvalid},
		{"agent switches management", agent, with(func(k *VaultKeys) {
			k.Management = KeyPlatform
			k.Wraps = append(k.Wraps, testWrap("cc", WrapPlatform, PlatformHolder))
		}), ErrDenied},
		{"two wraps for one host", admin, with(func(k *VaultKeys) { k.Wraps = append(k.Wraps, testWrap("cc", WrapHost, "web01")) }), ErrInvalid},
		{"no wraps", admin, with(func(k *VaultKeys) { k.Wraps = nil; k.Epoch = 2 }), ErrInvalid},
	} {
		err := CheckKeysChange(tc.p, "v", &old, tc.next)
		if (tc.want == nil) != (err == nil) || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A legacy vault is converted by admins only.
	if err := CheckKeysChange(agent, "v", nil, testKeys()); !errors.Is(err, ErrDenied) {
		t.Errorf("agent converting a legacy vault: %v", err)
	}
	// A due rotation: a change that keeps the epoch is refused.
	due, _ := RemoveHostWraps(old, "web01")
	if due.RotateBy != 2 || len(due.Wraps) != 1 {
		t.Fatalf("RemoveHostWraps: %+v", due)
	}
	keep := *due.Clone()
	keep.Wraps = append(keep.Wraps, testWrap("dd", WrapHost, "web03"))
	if err := CheckKeysChange(agent, "v", &due, keep); !errors.Is(err, ErrInvalid) {
		t.Errorf("change without the due rotation: %v", err)
	}
	keep.Epoch = 2
	if err := CheckKeysChange(agent, "v", &due, keep); err != nil {
		t.Errorf("change with the due rotation: %v", err)
	}
}

// TestApplyKeysChange: the revision is compared, the servers' fields are kept or set,
// a due rotation is cleared once reached, legacy wrappings go, and the audit target
// names wraps, never key bytes.
func TestApplyKeysChange(t *testing.T) {
	now := time.Unix(1000, 0).UTC()
	admin := Principal{Name: "ops", Role: RoleAdmin}
	k := testKeys()
	k.Wraps[0].Created, k.Wraps[0].CreatedBy, k.Wraps[0].LastUsed = now.Add(-time.Hour), "first", now.Add(-time.Minute)
	k.RotateBy = 2
	v := Vault{ID: "v", Keys: &k}
	next := *k.Clone()
	next.Epoch = 2
	next.Wraps[0].CreatedBy = "forged"
	next.Wraps = append(next.Wraps[:1], testWrap("cc", WrapHost, "web02"))
	if _, err := ApplyKeysChange(admin, &v, KeysChange{Revision: 2, Keys: next, Event: "x"}, now); !errors.Is(err, ErrExists) {
		t.Fatalf("stale revision: %v", err)
	}
	target, err := ApplyKeysChange(admin, &v, KeysChange{Revision: 3, Keys: next, Event: "x"}, now)
	if err != nil {
		t.Fatal(err)
	}
	g := v.Keys
	if g.Revision != 4 || g.RotateBy != 0 || g.Wraps[0].CreatedBy != "first" || !g.Wraps[0].LastUsed.Equal(now.Add(-time.Minute)) ||
		g.Wraps[1].CreatedBy != "ops" || !g.Wraps[1].Created.Equal(now) {
		t.Fatalf("applied record: %+v", g)
	}
	if want := "epoch 1→2, management customer; added host wrap cc (web02); removed host wrap bb (web01)"; target != want {
		t.Fatalf("audit target %q, want %q", target, want)
	}
	legacy := Vault{ID: "l", KeyWraps: [][]byte{{1}}}
	if _, err := ApplyKeysChange(admin, &legacy, KeysChange{Keys: VaultKeys{Management: KeyCustomer, Wraps: []KeyWrap{testWrap("aa", WrapPassphrase, WrapPassphrase)}}}, now); err != nil || legacy.KeyWraps != nil || legacy.Keys == nil {
		t.Fatalf("legacy conversion: %v", err)
	}
}

// TestKMSAndEscrowWraps: a kms wrap names its plugin and key version; an admin may
// re-wrap it in place under another version of the same key (audited as such), an agent
// may not, and a re-wrap may not change the key or the plugin; escrow wraps are a kind.
func TestKMSAndEscrowWraps(t *testing.T) {
	admin := Principal{Name: "ops", Role: RoleAdmin}
	agent := Principal{Name: "web01", Role: RoleBackupAgent, Vaults: []VaultID{"v"}}
	kw := testWrap("cc", WrapKMS, "projects/p/keys/k")
	kw.Identity = []byte{3}
	kw.Params = map[string]string{ParamPlugin: "vault-transit", ParamKeyVersion: "1"}
	old := testKeys()
	old.Wraps = append(old.Wraps, kw)
	with := func(f func(w *KeyWrap)) VaultKeys {
		k := *old.Clone()
		f(&k.Wraps[2])
		return k
	}
	rewrap := with(func(w *KeyWrap) {
		w.Recipient, w.Identity, w.Params[ParamKeyVersion] = "age1new", []byte{4}, "2"
	})
	for _, tc := range []struct {
		name string
		p    Principal
		next VaultKeys
		want error
	}{
		{"admin re-wraps under a new version", admin, rewrap, nil},
		{"agent re-wraps", agent, rewrap, ErrDenied},
		{"re-wrap changes the key", admin, with(func(w *KeyWrap) { w.Holder, w.Identity = "other", []byte{4} }), ErrInvalid},
		{"re-wrap changes the plugin", admin, with(func(w *KeyWrap) { w.Params[ParamPlugin], w.Identity = "evil", []byte{4} }), ErrInvalid},
		{"kms wrap without a version", admin, with(func(w *KeyWrap) { delete(w.Params, ParamKeyVersion) }), ErrInvalid},
		{"kms wrap without an identity", admin, with(func(w *KeyWrap) { w.Identity = nil }), ErrInvalid},
		{"escrow wrap added by an agent", agent, func() VaultKeys {
			k := *old.Clone()
			k.Wraps = append(k.Wraps, testWrap("dd", WrapEscrow, "escrow"))
			return k
		}(), nil},
	} {
		err := CheckKeysChange(tc.p, "v", &old, tc.next)
		if (tc.want == nil) != (err == nil) || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	v := &Vault{ID: "v", Keys: old.Clone()}
	target, err := ApplyKeysChange(admin, v, KeysChange{Revision: old.Revision, Keys: rewrap, Event: "rotate-kms"}, time.Unix(100, 0))
	if err != nil {
		t.Fatal(err)
	}
	if want := "re-wrapped kms wrap cc (key projects/p/keys/k version 1→2)"; !strings.Contains(target, want) {
		t.Fatalf("audit target %q lacks %q", target, want)
	}
	if w, _ := v.Keys.Wrap("cc"); w.Params[ParamKeyVersion] != "2" || w.Recipient != "age1new" {
		t.Fatalf("after the re-wrap: %+v", w)
	}
}
