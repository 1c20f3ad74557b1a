package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// newSealedCluster starts one meta server holding a cluster seal key.
func newSealedCluster(t *testing.T) *Server {
	t.Helper()
	c := newCluster(t, 1, func(cfg *Config) {
		cfg.SealKeyFile = filepath.Join(cfg.Dir, "seal.key")
		if err := NewSealKeyFile(cfg.SealKeyFile); err != nil {
			t.Fatal(err)
		}
	})
	return c.srv[c.leader()]
}

// testReplicationJob returns a job whose key is a distinctive PEM block.
func testReplicationJob(t *testing.T, name string) meta.Replication {
	t.Helper()
	raw := make([]byte, 48)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	key := []byte("-----BEGIN PRIVATE KEY-----\n" + base64.StdEncoding.EncodeToString(raw) + "\n-----END PRIVATE KEY-----\n")
	return meta.Replication{Name: name, Source: []string{"127.0.0.1:1"}, SourceCA: []byte("ca"), Cert: []byte("cert"), Key: key,
		Principal: "repl-" + name, Vault: meta.VaultID(name)}
}

// TestReplicationKeySealed: the job's source key is sealed under the cluster seal key
// before it is proposed: neither the Raft log nor the FSM's record holds its bytes, and
// the runner's accessor (Replication) opens it.
func TestReplicationKeySealed(t *testing.T) {
	s := newSealedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := meta.WithPrincipal(ctx, meta.Principal{Name: "alice", Role: meta.RoleAdmin})
	job := testReplicationJob(t, "site-a")
	key := bytes.Clone(job.Key)
	body := key[len("-----BEGIN PRIVATE KEY-----\n") : len(key)-len("\n-----END PRIVATE KEY-----\n")]
	if _, err := s.AddReplication(admin, job); err != nil {
		t.Fatal(err)
	}
	first, err := s.logs.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := s.logs.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(l.Data, body) {
			t.Fatalf("raft log entry %d holds the replication key", i)
		}
	}
	stored, err := s.fsm.Replication("site-a")
	if err != nil {
		t.Fatal(err)
	}
	enc, err := s.codec.Marshal(stored)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored.Key) != 0 || bytes.Contains(enc, body) || len(stored.SealedKey) == 0 || stored.KeySeal == "" {
		t.Fatalf("FSM record: key %d bytes, sealed %d bytes, seal %q, holds the key: %v",
			len(stored.Key), len(stored.SealedKey), stored.KeySeal, bytes.Contains(enc, body))
	}
	if got := meta.ReplicationFor(stored); got.SealedKey != nil {
		t.Fatal("ReplicationFor keeps the sealed key")
	}
	opened, err := s.Replication(ctx, "site-a")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(opened.Key, key) {
		t.Fatal("the runner's accessor does not open the sealed key")
	}
	// A sealed key is bound to its job: moved to another job's record, it does not open.
	moved := stored
	moved.Name = "site-b"
	if _, err := s.openReplicationKey(ctx, moved); err == nil {
		t.Fatal("a sealed key opened under another job's name")
	}
}

// TestReplicationKeyLegacyEntry: an AddReplication entry written before keys were sealed
// (the key in the clear) still applies and its job still runs.
func TestReplicationKeyLegacyEntry(t *testing.T) {
	s := newSealedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job := testReplicationJob(t, "old")
	if _, err := s.propose(time.Minute, command.AddReplication{Replication: job,
		By: meta.Principal{Name: "alice", Role: meta.RoleAdmin}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Replication(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Key, job.Key) {
		t.Fatal("a legacy job's key is lost")
	}
}
