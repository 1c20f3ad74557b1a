package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/hooks"
	"github.com/cofferhq/coffer/meta"
)

// BackupRunner runs a policy with the agent library: its hooks around a backup of its
// paths (with its excludes) or its block device, tagged "policy-NAME" and its tags,
// under its compression policy, then its lock on the new snapshot.
type BackupRunner struct {
	Agent *client.Agent // an open vault
	// Locker sets the policy's lock (the cluster's meta client); nil: policies with a
	// lock fail.
	Locker meta.RetentionService
	Vault  meta.VaultID
	// Output receives the hooks' output (default discard); the end of a failed hook's
	// output is also put into the job's error.
	Output io.Writer
	Now    func() time.Time // default time.Now
}

// hookTail is how much of a hook's output is kept for the job's error.
const hookTail = 1024

// Run implements Runner.
func (r BackupRunner) Run(ctx context.Context, p meta.BackupPolicy) (Outcome, error) {
	ex, err := client.ExcludeMatcher(p.Excludes)
	if err != nil {
		return Outcome{}, err
	}
	comp, err := crypt.ParseCompression(p.Compression)
	if err != nil {
		return Outcome{}, fmt.Errorf("agent: policy %s: %w", p.Name, err)
	}
	if p.Lock != nil && r.Locker == nil {
		return Outcome{}, fmt.Errorf("agent: policy %s locks its snapshots, but this agent has no lock service", p.Name)
	}
	out := r.Output
	if out == nil {
		out = io.Discard
	}
	tail := &tailWriter{max: hookTail}
	w := io.MultiWriter(out, tail)
	tags := append([]string{"policy-" + p.Name}, p.Tags...)
	var res client.BackupResult
	saved := false
	spec := hooks.Spec{Pre: p.PreHook, Post: p.PostHook, Timeout: p.HookTimeout, Stdout: w, Stderr: w}
	err = hooks.Run(ctx, spec, func(ctx context.Context) error {
		tail.reset() // only the hook that fails matters
		var err error
		if p.Device != "" {
			res, err = r.Agent.BackupBlock(ctx, client.BlockOptions{Path: p.Device, Tags: tags, Compression: comp})
		} else {
			res, err = r.Agent.Backup(ctx, client.BackupOptions{Paths: p.Paths, Tags: tags, Exclude: ex, Compression: comp})
		}
		saved = err == nil
		return err
	})
	if err != nil && !saved {
		if (errors.Is(err, hooks.ErrPreHook) || errors.Is(err, hooks.ErrPostHook)) && tail.String() != "" {
			err = fmt.Errorf("%w; its output: %s", err, tail.String())
		}
		return Outcome{}, err
	}
	s := res.Snapshot
	o := Outcome{Status: meta.JobCompleted, Snapshot: s.ID.String(), Stats: meta.JobStats{
		FilesNew: s.Stats.FilesNew, FilesChanged: s.Stats.FilesChanged, FilesUnmodified: s.Stats.FilesUnmodified,
		FilesSkipped: int64(len(res.Skipped)), Dirs: s.Stats.DirsTotal, BytesProcessed: s.Stats.BytesProcessed,
		BytesRead: res.BytesRead, BytesAdded: s.Stats.BytesAdded, BytesNew: res.PlainAdded, ChunksAdded: s.Stats.ChunksAdded}}
	var warns []string
	if s.Stats.Status == client.StatusPartiallyFailed || len(res.Skipped) > 0 {
		o.Status = meta.JobPartial
		warns = append(warns, fmt.Sprintf("%d unreadable paths skipped (first: %s: %s)", len(res.Skipped), firstSkip(res).Path, firstSkip(res).Err))
	}
	if err != nil { // the snapshot is saved, a post-hook (or thaw) failed
		o.Status = meta.JobPartial
		msg := err.Error()
		if t := tail.String(); t != "" {
			msg += "; its output: " + t
		}
		warns = append(warns, msg)
	}
	if l := p.Lock; l != nil {
		now := time.Now
		if r.Now != nil {
			now = r.Now
		}
		if _, err := r.Locker.SetLock(ctx, r.Vault, s.ID, meta.Lock{Mode: l.Mode, Until: now().Add(l.For).UTC()}, meta.Bypass{}); err != nil {
			o.Status = meta.JobPartial
			warns = append(warns, fmt.Sprintf("snapshot saved but not locked: %v", err))
		}
	}
	o.Warning = strings.Join(warns, "; ")
	return o, nil
}

func firstSkip(res client.BackupResult) client.Skipped {
	if len(res.Skipped) == 0 {
		return client.Skipped{}
	}
	return res.Skipped[0]
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailWriter) reset() {
	t.mu.Lock()
	t.buf = nil
	t.mu.Unlock()
}

// String returns the kept output on one line.
func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(strings.Fields(string(bytes.ToValidUTF8(t.buf, []byte("?")))), " ")
}
