package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// A purge removes a vault's key wrappings from the FSM (crypto-erase), but the bytes
// would live on in the log entry that created the vault, in raft snapshots taken before
// the purge and in freed pages of the log file. Every server, leader or follower, scrubs
// them itself once it has applied a PurgeVault:
//
//  1. the FSM rewrites its Pebble state into a fresh directory (fsm.ApplyBatch);
//  2. scrubLog takes a raft snapshot with TrailingLogs lowered to 0 for the moment, so
//     raft deletes every log entry up to the snapshot, the purge's included;
//  3. it removes the raft snapshots older than that one;
//  4. it compacts the log file into a new file (raftlog.Store.Compact).
//
// A follower that was away during the purge scrubs when it applies the entry, or, when
// it catches up from a snapshot instead (its FSM replaced whole, never applying the
// purge), after the restore: every Restore is followed by a scrub up to the restored
// index, since the snapshot may cover purges (installs are rare; the scrub is cheap).

// scrubRetry is how long scrubLoop waits before retrying a scrub that failed (typically
// "nothing new to snapshot": a snapshot was taken after the purge, so the next log
// entry, at most a tick away on the leader, is needed first).
const scrubRetry = time.Second

// onPurge is the FSM's OnPurge and OnRestore: it records index and wakes scrubLoop. It
// never blocks.
func (s *Server) onPurge(index uint64) {
	for {
		cur := s.purgeIndex.Load()
		if index <= cur || s.purgeIndex.CompareAndSwap(cur, index) {
			break
		}
	}
	select {
	case s.purged <- struct{}{}:
	default:
	}
}

// ScrubbedIndex returns the log index of the newest purge whose key wrappings this
// server has removed from its raft log and snapshots (0 when none).
func (s *Server) ScrubbedIndex() uint64 { return s.scrubbed.Load() }

// scrubLoop scrubs the log after each purge until Close. Owned by New.
func (s *Server) scrubLoop() {
	for {
		select {
		case <-s.stop:
			return
		case <-s.purged:
		}
		for {
			idx := s.purgeIndex.Load()
			if idx <= s.scrubbed.Load() {
				break
			}
			err := s.scrubLog(idx)
			if err == nil {
				s.scrubbed.Store(idx)
				s.log.Info("purged key wrappings scrubbed from the raft log and snapshots", "index", idx)
				continue
			}
			s.log.Warn("scrub the raft log after a purge; retrying", "index", idx, "err", err)
			select {
			case <-s.stop:
				return
			case <-time.After(scrubRetry):
			}
		}
	}
}

// scrubLog removes every raft log entry and raft snapshot up to and including index (a
// PurgeVault the FSM has applied) from this server's disk.
func (s *Server) scrubLog(index uint64) error {
	cur := s.raft.ReloadableConfig()
	low := cur
	low.TrailingLogs = 0
	if err := s.raft.ReloadConfig(low); err != nil {
		return fmt.Errorf("server: scrub: lower trailing logs: %w", err)
	}
	f := s.raft.Snapshot()
	err := s.await(f)
	if rerr := s.raft.ReloadConfig(cur); rerr != nil {
		err = errors.Join(err, fmt.Errorf("server: scrub: restore trailing logs: %w", rerr))
	}
	if err != nil {
		return fmt.Errorf("server: scrub: snapshot: %w", err)
	}
	m, rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("server: scrub: open snapshot: %w", err)
	}
	_ = rc.Close()
	if m.Index < index {
		return fmt.Errorf("server: scrub: snapshot at %d is before the purge at %d", m.Index, index)
	}
	if first, err := s.logs.FirstIndex(); err != nil {
		return fmt.Errorf("server: scrub: %w", err)
	} else if first != 0 && first <= index {
		return fmt.Errorf("server: scrub: log still starts at %d, before the purge at %d", first, index)
	}
	list, err := s.snaps.List()
	if err != nil {
		return fmt.Errorf("server: scrub: list snapshots: %w", err)
	}
	for _, old := range list {
		if old.Index < m.Index {
			if err := os.RemoveAll(filepath.Join(s.cfg.Dir, "snapshots", "snapshots", old.ID)); err != nil {
				return fmt.Errorf("server: scrub: remove snapshot %s: %w", old.ID, err)
			}
		}
	}
	if err := s.logs.Compact(); err != nil {
		return fmt.Errorf("server: scrub: %w", err)
	}
	return nil
}
