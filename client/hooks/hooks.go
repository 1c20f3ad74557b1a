package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for Spec's zero fields.
const (
	DefaultTimeout       = 10 * time.Minute
	DefaultFreezeTimeout = 5 * time.Minute
)

// Sentinel errors; match with errors.Is.
var (
	// ErrPreHook: the pre-hook failed or timed out; nothing was captured.
	ErrPreHook = errors.New("hooks: pre-hook failed")
	// ErrPostHook: the post-hook failed or timed out (the capture itself succeeded).
	ErrPostHook = errors.New("hooks: post-hook failed")
	// ErrFreeze: a file system could not be frozen or thawed, or stayed frozen too long.
	ErrFreeze = errors.New("hooks: fsfreeze")
)

// Freezer freezes and thaws the file system mounted at a mount point.
type Freezer interface {
	Freeze(mountpoint string) error
	Thaw(mountpoint string) error
}

// IoctlFreezer freezes with the Linux FIFREEZE/FITHAW ioctls (root only, like
// fsfreeze(8)).
type IoctlFreezer struct{}

// Linux ioctl numbers: _IOWR('X', 119, int) and _IOWR('X', 120, int).
const (
	ioctlFIFREEZE = 0xc0045877
	ioctlFITHAW   = 0xc0045878
)

// Freeze issues FIFREEZE on mountpoint.
func (IoctlFreezer) Freeze(mountpoint string) error { return ioctlMount(mountpoint, ioctlFIFREEZE) }

// Thaw issues FITHAW on mountpoint.
func (IoctlFreezer) Thaw(mountpoint string) error { return ioctlMount(mountpoint, ioctlFITHAW) }

func ioctlMount(mountpoint string, req uint) error {
	f, err := os.Open(mountpoint)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), 0); e != 0 {
		return &os.PathError{Op: "ioctl", Path: mountpoint, Err: e}
	}
	return nil
}

// Spec says which hooks run around a capture. Zero fields take the defaults named beside
// them.
type Spec struct {
	Pre, Post string        // shell commands (run with /bin/sh -c); empty: none
	Timeout   time.Duration // per hook; default DefaultTimeout
	// Freeze lists mount points frozen, in order, for the capture (thawed in reverse).
	Freeze        []string
	FreezeTimeout time.Duration // longest a file system stays frozen; default DefaultFreezeTimeout
	Freezer       Freezer       // default IoctlFreezer
	// Stdout and Stderr receive the hooks' output; default discard.
	Stdout, Stderr io.Writer
	// Env is added to the hooks' environment (after os.Environ()).
	Env []string
}

// Run runs the pre-hook, freezes, runs capture, thaws and runs the post-hook (see the
// package comment). The post-hook gets COFFER_HOOK=post and COFFER_BACKUP_STATUS set to
// "success", "failed" or "not run" (the pre-hook failed). It returns the first error:
// the pre-hook's (ErrPreHook), the freeze's (ErrFreeze), the capture's, a thaw's
// (ErrFreeze), then the post-hook's (ErrPostHook).
func Run(ctx context.Context, s Spec, capture func(ctx context.Context) error) error {
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.FreezeTimeout <= 0 {
		s.FreezeTimeout = DefaultFreezeTimeout
	}
	if s.Freezer == nil {
		s.Freezer = IoctlFreezer{}
	}
	status := "not run"
	var err error
	if s.Pre != "" {
		if perr := s.runHook(ctx, "pre", s.Pre, nil); perr != nil {
			err = fmt.Errorf("%w: %w", ErrPreHook, perr)
		}
	}
	if err == nil {
		err = s.frozen(ctx, capture)
		status = "success"
		if err != nil {
			status = "failed"
		}
	}
	if s.Post != "" {
		// NB: the post-hook runs even when ctx is done (it cleans up), bounded by its timeout.
		pctx := context.WithoutCancel(ctx)
		if perr := s.runHook(pctx, "post", s.Post, []string{"COFFER_BACKUP_STATUS=" + status}); perr != nil && err == nil {
			err = fmt.Errorf("%w: %w", ErrPostHook, perr)
		}
	}
	return err
}

// frozen freezes s.Freeze, runs capture and thaws, whatever happens.
func (s *Spec) frozen(ctx context.Context, capture func(ctx context.Context) error) (err error) {
	if len(s.Freeze) == 0 {
		return capture(ctx)
	}
	var mu sync.Mutex
	var done []string // frozen, in order
	thawAll := func() error {
		mu.Lock()
		defer mu.Unlock()
		var first error
		for i := len(done) - 1; i >= 0; i-- {
			if terr := s.Freezer.Thaw(done[i]); terr != nil && first == nil {
				first = fmt.Errorf("%w: thaw %s: %w", ErrFreeze, done[i], terr)
			}
		}
		done = nil
		return first
	}
	defer func() {
		if terr := thawAll(); terr != nil && err == nil {
			err = terr
		}
	}()
	for _, m := range s.Freeze {
		if ferr := s.Freezer.Freeze(m); ferr != nil {
			return fmt.Errorf("%w: freeze %s: %w", ErrFreeze, m, ferr)
		}
		mu.Lock()
		done = append(done, m)
		mu.Unlock()
	}
	timeoutErr := fmt.Errorf("%w: still frozen after %v: thawed and the capture cancelled", ErrFreeze, s.FreezeTimeout)
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var thawErr error
	fired := make(chan struct{})
	t := time.AfterFunc(s.FreezeTimeout, func() {
		thawErr = thawAll() // NB: read only after fired is closed
		cancel(timeoutErr)
		close(fired)
	})
	err = capture(cctx)
	if !t.Stop() {
		// The timer fired: the file systems were thawed, the capture cancelled.
		<-fired
		if thawErr != nil {
			return thawErr
		}
		return context.Cause(cctx)
	}
	return err
}

// runHook runs one hook command with the timeout; on timeout its whole process group is
// killed.
func (s *Spec) runHook(ctx context.Context, which, command string, env []string) error {
	hctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, "/bin/sh", "-c", command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(append(os.Environ(), "COFFER_HOOK="+which), s.Env...)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
	err := cmd.Run()
	if hctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		return fmt.Errorf("%s-hook %q timed out after %v", which, command, s.Timeout)
	}
	if err != nil {
		return fmt.Errorf("%s-hook %q: %w", which, command, err)
	}
	return nil
}
