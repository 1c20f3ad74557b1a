package node

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/cofferhq/coffer/meta"
)

// FuzzRevocationFile: a persisted revocation list (disk bytes) either loads as a valid
// list (every entry names exactly one of serial and principal, no Seq above the version)
// that saves and loads back equal, or fails with an error; never a panic.
func FuzzRevocationFile(f *testing.F) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	dir := f.TempDir()
	if err := saveRevocations(dir, &revocationList{Version: 9, Revocations: []meta.Revocation{
		{Seq: 3, Serial: "ab12", At: at, By: "ops"},
		{Seq: 9, Principal: "web01", At: at, By: "ops", Reason: "stolen"},
	}}); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(filepath.Join(dir, revocationFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"version":0,"revocations":null}`))
	f.Add([]byte(`{"version":1,"revocations":[{"seq":2,"serial":"x","at":"2026-01-01T00:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, revocationFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := loadRevocations(dir)
		if err != nil {
			return
		}
		for _, r := range l.Revocations {
			if meta.ValidateRevocation(r) != nil || r.Seq > l.Version {
				t.Fatalf("loaded an invalid entry %+v (version %d)", r, l.Version)
			}
		}
		if l.current {
			t.Fatal("a list loaded from disk counts as current")
		}
		if err := saveRevocations(dir, l); err != nil {
			t.Fatal(err)
		}
		again, err := loadRevocations(dir)
		if err != nil {
			t.Fatalf("a saved list does not load back: %v", err)
		}
		if !reflect.DeepEqual(normalise(l), normalise(again)) {
			t.Fatalf("round trip changed the list: %+v -> %+v", l, again)
		}
	})
}

// normalise makes times comparable with reflect.DeepEqual (no location pointers).
func normalise(l *revocationList) revocationList {
	out := revocationList{Version: l.Version}
	for _, r := range l.Revocations {
		r.At = r.At.UTC()
		out.Revocations = append(out.Revocations, r)
	}
	return out
}

// FuzzGossipMeta: whatever a gossip member advertises (network bytes), decoding it for
// the revocation check never panics, and a member that advertises nothing usable is
// still matched by name (a principal revocation applies to it).
func FuzzGossipMeta(f *testing.F) {
	f.Add([]byte(`{"a":"127.0.0.1:7000","r":["chunk"],"d":"rack1","s":"ab12","i":1767323045}`))
	f.Add([]byte(`{"i":-9223372036854775808}`))
	f.Add([]byte{})
	list := []meta.Revocation{{Seq: 1, Principal: "chunk-3", At: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), By: "ops"}}
	f.Fuzz(func(t *testing.T, b []byte) {
		serial, issued := memberInfo(&memberlist.Node{Name: "chunk-3", Meta: b})
		_, revoked := meta.Revoked(list, serial, "chunk-3", issued)
		if issued.Before(list[0].At) && !revoked {
			t.Fatalf("a member issued %v before a principal revocation at %v is not revoked", issued, list[0].At)
		}
	})
}
