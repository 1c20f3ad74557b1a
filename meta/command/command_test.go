package command

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

func sampleBodies() []Body {
	parent := chunk.ID{9}
	return []Body{
		CreateVault{Vault: meta.Vault{ID: "v1", Profile: placement.Profile{K: 4, M: 2}, KeyWraps: [][]byte{{1, 2}}, Chunker: "fastcdc-v1-1M"}},
		CreateVault{Vault: meta.Vault{ID: "v2", Profile: placement.Profile{K: 4, M: 2}, KeyWraps: [][]byte{{1, 2}}},
			By: &meta.Principal{Name: "a", Role: meta.RoleBackupAgent, Vaults: []meta.VaultID{"v2"}}},
		CommitSnapshot{Snapshot: meta.Snapshot{ID: chunk.ID{4}, Vault: "v1", Host: "h", Tree: chunk.ID{2}, Refs: []chunk.ID{{3}},
			Lock: &meta.Lock{Mode: meta.Compliance, Until: time.Unix(300, 0).UTC()}}, GCEpoch: 3,
			By: &meta.Principal{Name: "a", Role: meta.RoleBackupAgent}},
		CommitSnapshot{Snapshot: meta.Snapshot{ID: chunk.ID{1}, Vault: "v1", Start: time.Unix(100, 123456789).UTC(), Host: "h", Paths: []string{"/a"},
			Parent: &parent, Tree: chunk.ID{2}, Refs: []chunk.ID{{3}}, Stats: meta.SnapshotStats{FilesNew: 3, DurationS: 1.5, Status: "completed"}}},
		SetClusterMap{Map: placement.Map{Epoch: 2, PGCount: 64, Profile: placement.DefaultProfile, Nodes: []placement.Node{{ID: "n1", Addr: "a:1", Domain: "d", Weight: 1, State: placement.StateActive}}}},
		Tick{},
		AddReplication{Replication: meta.Replication{Name: "r", Source: []string{"h:1"}, SourceCA: []byte("ca"), Cert: []byte("c"), Key: []byte("k"),
			Principal: "site-b", Vault: "v1", Schedule: "@hourly", LimitRate: 1 << 20}, By: meta.Principal{Name: "adm", Role: meta.RoleAdmin}},
		RemoveReplication{Name: "r", By: meta.Principal{Name: "adm", Role: meta.RoleAdmin}},
		RequestReplicationRun{Name: "r", By: meta.Principal{Name: "adm", Role: meta.RoleAdmin}},
		ReplicationRun{Run: meta.ReplicationRun{Name: "r", Job: "j0000000000000001", Final: true, Status: meta.JobCompleted, Bytes: 5, Chunks: 1}},
		ImportReplicaVault{Name: "r", Vault: meta.Vault{ID: "v1", Profile: placement.Profile{K: 4, M: 2}, KeyWraps: [][]byte{{1, 2}}, Replica: &meta.VaultReplica{Job: "r", Source: []string{"h:1"}}}},
		ImportReplicaSnapshot{Name: "r", Snapshot: meta.Snapshot{ID: chunk.ID{4}, Vault: "v1", Time: time.Unix(200, 0).UTC(), Host: "h", Tree: chunk.ID{2}, Refs: []chunk.ID{{3}},
			Lock: &meta.Lock{Mode: meta.Compliance, Until: time.Unix(300, 0).UTC()}, LegalHold: true}, GCEpoch: 2},
		Tick{Elapsed: 999},
		TickV1{Elapsed: 999},
		DeleteSnapshots{Vault: "v1", IDs: []chunk.ID{{1}, {2}}, By: meta.Principal{Name: "ops", Role: meta.RoleAdmin},
			Bypass: meta.Bypass{Governance: true, Reason: "ticket 7"}, Action: "forget"},
		SetLock{Vault: "v1", ID: chunk.ID{1}, Lock: meta.Lock{Mode: meta.Compliance, Until: time.Unix(200, 0).UTC()},
			By: meta.Principal{Name: "a", Role: meta.RoleBackupAgent, Vaults: []meta.VaultID{"v1"}}},
		SetHold{Vault: "v1", ID: chunk.ID{1}, Hold: true, By: meta.Principal{Name: "ops", Role: meta.RoleAdmin}, Reason: "case 12"},
		DeleteVault{Vault: "v1", Window: int64(time.Hour), By: meta.Principal{Name: "ops", Role: meta.RoleAdmin}, Reason: "tenant left"},
		UndeleteVault{Vault: "v1", By: meta.Principal{Name: "ops", Role: meta.RoleAdmin}},
		PurgeVault{Vault: "v1"},
		SetVaultPolicy{Vault: "v1", Policy: meta.VaultPolicy{Keep: meta.Policy{Daily: 7, Within: time.Hour},
			Lock: &meta.DefaultLock{Mode: meta.Compliance, For: 24 * time.Hour}, MaxAgentLock: 730 * 24 * time.Hour}, By: meta.Principal{Name: "ops", Role: meta.RoleAdmin}},
		RecordAudit{Entry: meta.AuditEntry{Principal: "a", Role: meta.RoleBackupAgent, Action: "delete", Vault: "v1", Outcome: meta.AuditRefused, Reason: "denied"}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, b := range sampleBodies() {
		cmd := Command{Time: 1700000000123456789, Body: b}
		enc, err := Encode(cmd)
		if err != nil {
			t.Fatalf("%s: %v", b.Type(), err)
		}
		again, _ := Encode(cmd)
		if !bytes.Equal(enc, again) {
			t.Fatalf("%s: encoding is not deterministic", b.Type())
		}
		got, err := Decode(enc)
		if err != nil {
			t.Fatalf("%s: %v", b.Type(), err)
		}
		if !reflect.DeepEqual(got, cmd) {
			t.Fatalf("%s: round trip\n got %#v\nwant %#v", b.Type(), got, cmd)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	c := NewCodec()
	mk := func(env any) []byte {
		b, err := c.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tick, _ := c.Marshal(Tick{})
	type extraEnv struct {
		envelope
		X int `cbor:"9,keyasint"`
	}
	type badVault struct {
		Vault meta.Vault `cbor:"vault"`
		Extra int        `cbor:"extra"`
	}
	bv, _ := c.Marshal(badVault{})
	cases := map[string][]byte{
		"garbage":        []byte{0xff, 0x00},
		"empty":          nil,
		"version 0":      mk(envelope{Version: 0, Type: uint16(TypeTick), Body: tick}),
		"version 2":      mk(envelope{Version: 2, Type: uint16(TypeTick), Body: tick}),
		"unknown type":   mk(envelope{Version: Version, Type: 999, Body: tick}),
		"type zero":      mk(envelope{Version: Version, Type: 0, Body: tick}),
		"bad body":       mk(envelope{Version: Version, Type: uint16(TypeCreateVault), Body: []byte{0xff}}),
		"unknown field":  mk(envelope{Version: Version, Type: uint16(TypeCreateVault), Body: bv}),
		"extra envelope": mk(extraEnv{envelope: envelope{Version: Version, Type: uint16(TypeTick), Body: tick}, X: 1}),
	}
	for name, b := range cases {
		if _, err := Decode(b); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err = %v, want ErrDecode", name, err)
		}
	}
	if _, err := Encode(Command{}); err == nil {
		t.Error("encoding a nil body succeeded")
	}
}

// TestTagsAppendOnly pins the wire values of the type tags: changing one breaks every
// existing Raft log.
func TestTagsAppendOnly(t *testing.T) {
	want := map[Type]uint16{TypeCreateVault: 1, TypeCommitSnapshot: 2, TypeSetClusterMap: 3, TypeTickV1: 4, TypeTick: 5}
	for typ, v := range want {
		if uint16(typ) != v {
			t.Errorf("%s = %d, want %d", typ, typ, v)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, b := range sampleBodies() {
		enc, _ := Encode(Command{Time: 5, Body: b})
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error does not wrap ErrDecode: %v", err)
			}
			return
		}
		if _, err := Encode(cmd); err != nil {
			t.Fatalf("decoded command does not re-encode: %v", err)
		}
	})
}
