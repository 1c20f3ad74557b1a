package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFreezer records freezes and thaws in a shared event log.
type fakeFreezer struct {
	log      *eventLog
	failOn   string // mount point whose Freeze fails
	frozen   map[string]bool
	mu       sync.Mutex
	thawErrs int
}

func (f *fakeFreezer) Freeze(m string) error {
	if m == f.failOn {
		return errors.New("not supported")
	}
	f.mu.Lock()
	f.frozen[m] = true
	f.mu.Unlock()
	f.log.add("freeze " + m)
	return nil
}

func (f *fakeFreezer) Thaw(m string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.frozen[m] {
		f.thawErrs++
		return fmt.Errorf("%s is not frozen", m)
	}
	delete(f.frozen, m)
	f.log.add("thaw " + m)
	return nil
}

func (f *fakeFreezer) anyFrozen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.frozen) > 0
}

type eventLog struct {
	mu  sync.Mutex
	evs []string
}

func (l *eventLog) add(e string) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

func (l *eventLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.evs...)
}

// setup returns a spec whose hooks append to a file, and a function reading the hook
// lines merged with the in-process events in order.
func setup(t *testing.T) (Spec, *eventLog, *fakeFreezer, string) {
	t.Helper()
	log := &eventLog{}
	fr := &fakeFreezer{log: log, frozen: map[string]bool{}}
	out := filepath.Join(t.TempDir(), "hooks.log")
	return Spec{Freezer: fr, Timeout: 20 * time.Second, FreezeTimeout: 20 * time.Second}, log, fr, out
}

func hookLines(t *testing.T, p string) []string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestHooksRunInOrder(t *testing.T) {
	s, log, fr, out := setup(t)
	// The hooks record themselves in the event log through the capture's view: pre must
	// have run before the capture starts, post after it ends.
	s.Pre = "echo pre-$COFFER_HOOK >> " + out
	s.Post = "echo post-$COFFER_BACKUP_STATUS >> " + out
	s.Freeze = []string{"/mnt/a", "/mnt/b"}
	err := Run(context.Background(), s, func(ctx context.Context) error {
		if got := hookLines(t, out); len(got) != 1 || got[0] != "pre-pre" {
			t.Errorf("at capture time the hook log is %q, want the pre-hook only", got)
		}
		if !fr.anyFrozen() {
			t.Error("capture ran unfrozen")
		}
		log.add("capture")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "freeze /mnt/a,freeze /mnt/b,capture,thaw /mnt/b,thaw /mnt/a"
	if got := strings.Join(log.get(), ","); got != want {
		t.Errorf("events %s, want %s", got, want)
	}
	if got := strings.Join(hookLines(t, out), ","); got != "pre-pre,post-success" {
		t.Errorf("hooks ran as %s", got)
	}
}

func TestFailingPreHookAborts(t *testing.T) {
	s, log, fr, out := setup(t)
	s.Pre = "echo about to fail >&2; exit 7"
	s.Post = "echo post-$COFFER_BACKUP_STATUS >> " + out
	s.Freeze = []string{"/mnt/a"}
	called := false
	err := Run(context.Background(), s, func(ctx context.Context) error { called = true; return nil })
	if !errors.Is(err, ErrPreHook) || !strings.Contains(err.Error(), "exit status 7") {
		t.Fatalf("err = %v, want ErrPreHook naming the exit status", err)
	}
	if called || len(log.get()) != 0 || fr.anyFrozen() {
		t.Errorf("captured %v, events %q after a failed pre-hook", called, log.get())
	}
	if got := strings.Join(hookLines(t, out), ","); got != "post-not,run" {
		t.Errorf("post-hook saw %q, want status \"not run\"", got)
	}
}

func TestPostHookRunsAndThawsWhenCaptureFails(t *testing.T) {
	s, log, fr, out := setup(t)
	s.Post = "echo post-$COFFER_BACKUP_STATUS >> " + out
	s.Freeze = []string{"/mnt/a"}
	boom := errors.New("boom")
	err := Run(context.Background(), s, func(ctx context.Context) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if fr.anyFrozen() || strings.Join(log.get(), ",") != "freeze /mnt/a,thaw /mnt/a" {
		t.Errorf("events %q", log.get())
	}
	if got := strings.Join(hookLines(t, out), ","); got != "post-failed" {
		t.Errorf("post-hook saw %q", got)
	}
}

func TestHookTimeoutKillsTheHook(t *testing.T) {
	s, _, _, out := setup(t)
	s.Timeout = 300 * time.Millisecond
	s.Pre = "sleep 30; echo late >> " + out
	start := time.Now()
	err := Run(context.Background(), s, func(ctx context.Context) error { t.Error("captured after a timed-out pre-hook"); return nil })
	if !errors.Is(err, ErrPreHook) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v, want a pre-hook timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a 300ms hook timeout took %v", d)
	}
	// The post-hook timing out is reported too (the capture succeeded).
	s.Pre, s.Post = "", "sleep 30"
	if err := Run(context.Background(), s, func(ctx context.Context) error { return nil }); !errors.Is(err, ErrPostHook) {
		t.Errorf("post-hook timeout: %v", err)
	}
}

func TestFreezeTimeoutThawsAndCancels(t *testing.T) {
	s, log, fr, _ := setup(t)
	s.Freeze = []string{"/mnt/a"}
	s.FreezeTimeout = 100 * time.Millisecond
	err := Run(context.Background(), s, func(ctx context.Context) error {
		<-ctx.Done() // a capture that would never end by itself
		if fr.anyFrozen() {
			t.Error("capture cancelled before the thaw")
		}
		return ctx.Err()
	})
	if !errors.Is(err, ErrFreeze) || !strings.Contains(err.Error(), "still frozen") {
		t.Fatalf("err = %v, want the freeze timeout", err)
	}
	if fr.anyFrozen() || fr.thawErrs != 0 || strings.Join(log.get(), ",") != "freeze /mnt/a,thaw /mnt/a" {
		t.Errorf("events %q, thaw errors %d", log.get(), fr.thawErrs)
	}
}

func TestFailedFreezeThawsTheOthers(t *testing.T) {
	s, log, fr, _ := setup(t)
	s.Freeze = []string{"/mnt/a", "/mnt/b"}
	fr.failOn = "/mnt/b"
	err := Run(context.Background(), s, func(ctx context.Context) error { t.Error("captured"); return nil })
	if !errors.Is(err, ErrFreeze) || !strings.Contains(err.Error(), "/mnt/b") {
		t.Fatalf("err = %v", err)
	}
	if fr.anyFrozen() || strings.Join(log.get(), ",") != "freeze /mnt/a,thaw /mnt/a" {
		t.Errorf("events %q", log.get())
	}
}

func TestCancelledContextStillThawsAndRunsPost(t *testing.T) {
	s, log, fr, out := setup(t)
	s.Freeze = []string{"/mnt/a"}
	s.Post = "echo post-$COFFER_BACKUP_STATUS >> " + out
	ctx, cancel := context.WithCancel(context.Background())
	err := Run(ctx, s, func(ctx context.Context) error { cancel(); return ctx.Err() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if fr.anyFrozen() || strings.Join(log.get(), ",") != "freeze /mnt/a,thaw /mnt/a" {
		t.Errorf("events %q", log.get())
	}
	if got := strings.Join(hookLines(t, out), ","); got != "post-failed" {
		t.Errorf("post-hook after cancel saw %q", got)
	}
}
