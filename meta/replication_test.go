package meta

import (
	"strings"
	"testing"
	"time"
)

// TestStrongerLock: compliance wins over governance, the later end wins, nil is no lock.
func TestStrongerLock(t *testing.T) {
	t1, t2 := time.Unix(100, 0), time.Unix(200, 0)
	gov := func(u time.Time) *Lock { return &Lock{Mode: Governance, Until: u} }
	comp := func(u time.Time) *Lock { return &Lock{Mode: Compliance, Until: u} }
	for _, c := range []struct {
		a, b, want *Lock
	}{
		{nil, nil, nil},
		{nil, gov(t1), gov(t1)},
		{comp(t1), nil, comp(t1)},
		{gov(t2), comp(t1), comp(t2)},
		{comp(t2), gov(t1), comp(t2)},
		{gov(t1), gov(t2), gov(t2)},
	} {
		got := StrongerLock(c.a, c.b)
		if (got == nil) != (c.want == nil) || got != nil && *got != *c.want {
			t.Errorf("StrongerLock(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// TestMergeReplicaKeys: the source's wraps replace same-ID ones, wraps only the
// replica has stay (not a second wrap of one host, never a platform wrap), the higher
// epoch and the replica's revision are kept.
func TestMergeReplicaKeys(t *testing.T) {
	w := func(id, kind, holder string, keyring byte) KeyWrap {
		return KeyWrap{ID: id, Kind: kind, Holder: holder, Keyring: []byte{keyring}}
	}
	have := &VaultKeys{Management: KeyCustomer, Epoch: 3, Revision: 9, Wraps: []KeyWrap{
		w("aa", WrapPassphrase, "pass", 1), w("bb", WrapPassphrase, "target-only", 1), w("cc", WrapHost, "web01", 1), w("dd", WrapPlatform, PlatformHolder, 1)}}
	src := &VaultKeys{Management: KeyCustomer, Epoch: 2, Revision: 4, Wraps: []KeyWrap{
		w("aa", WrapPassphrase, "pass", 2), w("ee", WrapHost, "web01", 2)}}
	got := MergeReplicaKeys(have, src)
	ids := []string{}
	for _, x := range got.Wraps {
		ids = append(ids, x.ID)
	}
	if want := "aa ee bb"; strings.Join(ids, " ") != want {
		t.Fatalf("wraps %v, want %s", ids, want)
	}
	if a, _ := got.Wrap("aa"); a.Keyring[0] != 2 {
		t.Errorf("wrap aa kept the replica's keyring, want the source's")
	}
	if got.Epoch != 3 || got.Revision != 9 {
		t.Errorf("epoch %d revision %d, want 3 and 9", got.Epoch, got.Revision)
	}
	if n := MergeReplicaKeys(nil, src); len(n.Wraps) != 2 || n.Revision != 4 {
		t.Errorf("a new replica's keys: %+v", n)
	}
}

// TestValidateReplicationSealedKey: a job carries its key either in the clear or sealed
// with its seal key's ID, never both, never neither.
func TestValidateReplicationSealedKey(t *testing.T) {
	base := Replication{Name: "site-a", Source: []string{"a:1"}, SourceCA: []byte("ca"), Cert: []byte("cert"),
		Principal: "repl-a", Vault: "v"}
	for _, c := range []struct {
		name      string
		key       []byte
		sealed    []byte
		seal      string
		wantValid bool
	}{
		{"clear", []byte("k"), nil, "", true},
		{"sealed", nil, []byte("s"), "id", true},
		{"neither", nil, nil, "", false},
		{"both", []byte("k"), []byte("s"), "id", false},
		{"sealed without its seal key ID", nil, []byte("s"), "", false},
		{"sealed too long", nil, make([]byte, maxReplicationPEM+sealedKeyOverhead+1), "id", false},
	} {
		r := base
		r.Key, r.SealedKey, r.KeySeal = c.key, c.sealed, c.seal
		if err := ValidateReplication(r); (err == nil) != c.wantValid {
			t.Errorf("%s: ValidateReplication = %v, want valid %v", c.name, err, c.wantValid)
		}
	}
}
