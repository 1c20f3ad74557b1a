package server

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// filesHolding returns every regular file under the dirs whose bytes contain b. A file
// that vanishes while it is read (a store swapping files) is skipped.
func filesHolding(t *testing.T, dirs []string, b []byte) []string {
	t.Helper()
	var out []string
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if !e.Type().IsRegular() {
				return nil
			}
			data, err := os.ReadFile(p)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if bytes.Contains(data, b) {
				out = append(out, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestPurgeErasesKeyWrapEverywhere: once a deleted vault is purged, no file in any meta
// server's data directory (raft log, raft snapshots, FSM state) still holds its key
// wrapping, and the servers still work (restart, elect, commit) afterwards.
func TestPurgeErasesKeyWrapEverywhere(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.TickInterval = 20 * time.Millisecond })
	ctx := ctxT(t)
	l := c.srv[c.leader()]
	wrap := make([]byte, 80)
	if _, err := rand.Read(wrap); err != nil {
		t.Fatal(err)
	}
	v := newVault("doomed")
	v.KeyWraps = [][]byte{wrap}
	if _, err := l.CreateVault(ctx, v); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CreateVault(ctx, newVault("kept")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CommitSnapshot(ctx, storedSnapshot(t, c.chunks, "doomed", 2, 0)); err != nil {
		t.Fatal(err)
	}
	// A raft snapshot on every server puts the wrap in the snapshot files too.
	waitFor(t, "every server to apply the vault", func() bool {
		for _, s := range c.srv {
			if _, err := s.fsm.Vault("doomed"); err != nil {
				return false
			}
		}
		return true
	})
	for i, s := range c.srv {
		if err := s.Snapshot(); err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
	}
	if got := filesHolding(t, c.dirs, wrap); len(got) == 0 {
		t.Fatal("the grep finds the key wrapping nowhere before the purge: it proves nothing")
	}

	adminCtx := meta.WithPrincipal(ctx, meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	if _, err := l.DeleteVault(adminCtx, "doomed", 200*time.Millisecond, "retired"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every server to purge the vault", func() bool {
		for _, s := range c.srv {
			if _, err := s.fsm.Vault("doomed"); !errors.Is(err, meta.ErrNotFound) {
				return false
			}
		}
		return true
	})
	purged := time.Now()
	waitFor(t, "every server to scrub its raft log and snapshots", func() bool {
		for _, s := range c.srv {
			if s.ScrubbedIndex() == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("every server scrubbed %v after the last one applied the purge", time.Since(purged).Round(time.Millisecond))
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := filesHolding(t, c.dirs, wrap)
		if len(got) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the purged vault's key wrapping is still in %q", got)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Closed and restarted, the servers still agree and commit; nothing comes back.
	for i := range c.n {
		c.kill(i)
	}
	if got := filesHolding(t, c.dirs, wrap); len(got) != 0 {
		t.Fatalf("after shutdown the key wrapping is in %q", got)
	}
	for i := range c.n {
		c.restart(i)
	}
	l = c.srv[c.leader()]
	if _, err := l.CommitSnapshot(ctx, storedSnapshot(t, c.chunks, "kept", 2, 0)); err != nil {
		t.Fatalf("commit after the restart: %v", err)
	}
	if _, err := l.GetVault(ctx, "doomed"); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("purged vault after a restart: %v, want ErrNotFound", err)
	}
}

// TestPurgeScrubsFollowerCaughtUpBySnapshot: a server that was down during the purge
// and catches up from the leader's snapshot (it never applies the PurgeVault entry)
// still removes the key wrapping from its raft log.
func TestPurgeScrubsFollowerCaughtUpBySnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.TickInterval = 20 * time.Millisecond })
	ctx := ctxT(t)
	li := c.leader()
	l := c.srv[li]
	fi := (li + 1) % 3
	wrap := make([]byte, 80)
	if _, err := rand.Read(wrap); err != nil {
		t.Fatal(err)
	}
	v := newVault("doomed")
	v.KeyWraps = [][]byte{wrap}
	if _, err := l.CreateVault(ctx, v); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the follower to apply the vault", func() bool {
		_, err := c.srv[fi].fsm.Vault("doomed")
		return err == nil
	})
	c.kill(fi)
	if got := filesHolding(t, c.dirs[fi:fi+1], wrap); len(got) == 0 {
		t.Fatal("the stopped follower holds the key wrapping nowhere: the test proves nothing")
	}
	adminCtx := meta.WithPrincipal(ctx, meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	if _, err := l.DeleteVault(adminCtx, "doomed", 100*time.Millisecond, ""); err != nil {
		t.Fatal(err)
	}
	// The running servers scrub: the leader's log then starts after the purge, so the
	// follower can only catch up from a snapshot.
	waitFor(t, "the running servers to purge and scrub", func() bool {
		for i, s := range c.srv {
			if i != fi && s.ScrubbedIndex() == 0 {
				return false
			}
		}
		return true
	})
	c.restart(fi)
	f := c.srv[fi]
	waitFor(t, "the follower to catch up from the snapshot", func() bool {
		_, err := f.fsm.Vault("doomed")
		return errors.Is(err, meta.ErrNotFound) && f.raft.Stats()["last_snapshot_index"] != "0"
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := filesHolding(t, c.dirs[fi:fi+1], wrap)
		if len(got) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower that caught up by snapshot keeps the key wrapping in %q", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
