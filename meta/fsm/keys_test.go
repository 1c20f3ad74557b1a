package fsm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/placement"
)

func keyWrap(id, kind, holder string) meta.KeyWrap {
	w := meta.KeyWrap{ID: id, Kind: kind, Holder: holder, Recipient: "age1" + id, Keyring: []byte("sealed " + id)}
	if kind == meta.WrapPassphrase {
		w.Identity = []byte("identity " + id)
	}
	return w
}

// TestVaultKeysAndRevocation: a vault with key wraps is created and changed by
// compare-and-swap (a stale revision is refused and audited); revoking a host by the
// serial of its enrolled certificate removes its wrap from every vault and makes a
// rotation due, named in the revocation's audit record; the next change must rotate.
func TestVaultKeysAndRevocation(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	idx := uint64(0)
	apply := func(stamp int64, b command.Body) Result {
		idx++
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	ks := meta.VaultKeys{Management: meta.KeyCustomer, Wraps: []meta.KeyWrap{keyWrap("aa", meta.WrapPassphrase, meta.WrapPassphrase)}}
	if r := apply(100*sec, command.CreateVault{Vault: meta.Vault{ID: "a", Profile: placement.DefaultProfile, Keys: &ks}, By: &admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	add := *ks.Clone()
	add.Wraps = append(add.Wraps, keyWrap("bb", meta.WrapHost, "web01"))
	r := apply(101*sec, command.SetVaultKeys{Vault: "a", Change: meta.KeysChange{Revision: 0, Keys: add, Event: "add host"}, By: agent})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if v := r.Value.(meta.Vault); v.Keys.Revision != 1 || v.Keys.Wraps[1].CreatedBy != "web01" || v.Keys.Wraps[1].Created.IsZero() ||
		v.Keys.Wraps[0].CreatedBy != "ops" || v.Keys.Wraps[0].Created.IsZero() {
		t.Fatalf("after add: %+v", v.Keys)
	}
	if r := apply(102*sec, command.SetVaultKeys{Vault: "a", Change: meta.KeysChange{Revision: 0, Keys: add, Event: "add host"}, By: agent}); !errors.Is(r.Err, meta.ErrExists) {
		t.Fatalf("stale revision: %v", r.Err)
	}
	// web01 enrolled with serial s1; revoking that serial removes its wrap.
	tok, _ := meta.NewEnrollToken()
	h := meta.EnrollTokenHash(tok)
	apply(103*sec, command.CreateEnrollToken{Hash: h, Vault: "a", Name: "web01", TTL: int64(time.Hour), By: admin})
	if r := apply(103*sec, command.ConsumeEnrollToken{Hash: h, Name: "web01", Serial: "s1"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(104*sec, command.RevokeCert{Revocation: meta.Revocation{Serial: "s1"}, By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	v, err := f.Vault("a")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Keys.Wraps) != 1 || v.Keys.RotateBy != 1 || v.Keys.Revision != 2 {
		t.Fatalf("after revocation: %+v", v.Keys)
	}
	log, err := f.AuditLog(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range log {
		if e.Action == "cert revoke" && strings.Contains(e.Target, "host key wraps removed from vault a (rotation to epoch 1 due)") {
			found = true
		}
		if strings.Contains(e.Target, "sealed") || strings.Contains(e.Reason, "sealed") {
			t.Fatalf("audit entry holds key bytes: %+v", e)
		}
	}
	if !found {
		t.Fatalf("no revocation audit naming the removed wrap: %+v", log)
	}
	keep := *v.Keys.Clone()
	if r := apply(105*sec, command.SetVaultKeys{Vault: "a", Change: meta.KeysChange{Revision: 2, Keys: keep, Event: "rotate-key"}, By: agent}); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Fatalf("change without the due rotation: %v", r.Err)
	}
	keep.Epoch = 1
	if r := apply(105*sec, command.SetVaultKeys{Vault: "a", Change: meta.KeysChange{Revision: 2, Keys: keep, Event: "rotate-key"}, By: agent}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if v, _ := f.Vault("a"); v.Keys.Epoch != 1 || v.Keys.RotateBy != 0 {
		t.Fatalf("after the rotation: %+v", v.Keys)
	}
	// Last use: recorded, then not again within the interval.
	if r := apply(106*sec, command.TouchKeyWrap{Vault: "a", ID: "aa", By: agent}); r.Err != nil {
		t.Fatal(r.Err)
	}
	first, _ := f.Vault("a")
	apply(107*sec, command.TouchKeyWrap{Vault: "a", ID: "aa", By: agent})
	if v, _ := f.Vault("a"); first.Keys.Wraps[0].LastUsed.IsZero() || !v.Keys.Wraps[0].LastUsed.Equal(first.Keys.Wraps[0].LastUsed) {
		t.Fatalf("last used %v then %v; want set once within the interval", first.Keys.Wraps[0].LastUsed, v.Keys.Wraps[0].LastUsed)
	}
}
