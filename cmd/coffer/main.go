package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/bench/profenv"
	"github.com/cofferhq/coffer/meta"
	"golang.org/x/term"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitPartial = 3
	exitQueued  = 4 // stored for a second admin's approval (two-person rule), not done
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	tuner := newProcessTuner(os.Getenv) // before anything changes GOMAXPROCS
	setMemoryLimit(os.Getenv, tuner.cpus)
	stopProfile := profenv.Start(os.Getenv, os.Stderr, "coffer")
	code := runTuned(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv, &tuner)
	stopProfile()
	stop()
	os.Exit(code)
}

// run executes one coffer invocation and returns its exit code. args excludes the program
// name; getenv supplies environment variables. Nothing is written anywhere except stdout
// and stderr (and /dev/tty when a passphrase must be prompted for).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	return runTuned(ctx, args, stdin, stdout, stderr, getenv, nil)
}

// runTuned is run with the process's scheduling in tune's hands (nil: left alone, as
// for commands run inside a test's process).
func runTuned(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string, tune *processTuner) int {
	a := &app{
		tune:      tune,
		stdin:     stdin,
		stdout:    stdout,
		stderr:    stderr,
		getenv:    getenv,
		stderrTTY: isTerminal(stderr),
		prompt:    ttyPrompter{path: "/dev/tty"},
		now:       time.Now,
		loc:       time.Local,
	}
	return a.main(ctx, args)
}

// app is one invocation's environment: its streams, environment, terminal and parsed
// global flags. Commands receive it instead of touching os.* directly.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	stderrTTY      bool     // draw progress lines on stderr
	prompt         prompter // reads passphrases from a terminal
	now            func() time.Time
	loc            *time.Location // zone for human-readable times
	g              globals
	// tune sets the whole process's CPU scheduling for uploads (sched.go); nil in
	// tests, which share their process.
	tune *processTuner
}

// main parses global flags, dispatches to the command and maps its error to an exit code.
func (a *app) main(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("coffer", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a.g.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printMainUsage(a.stdout)
			return exitOK
		}
		fmt.Fprintf(a.stderr, "coffer: %v\n\n", err)
		printMainUsage(a.stderr)
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(a.stderr, "coffer: no command given")
		fmt.Fprintln(a.stderr)
		printMainUsage(a.stderr)
		return exitUsage
	}
	spec, n, err := lookupCommand(rest)
	if err != nil {
		fmt.Fprintf(a.stderr, "coffer: %v\n\n", err)
		if spec != nil {
			printGroupUsage(a.stderr, spec.name)
		} else {
			printMainUsage(a.stderr)
		}
		return exitUsage
	}
	return a.exec(ctx, spec, rest[n:])
}

// exec parses a command's flags and runs it.
func (a *app) exec(ctx context.Context, spec *cmdSpec, args []string) int {
	cmd := spec.new()
	fs := flag.NewFlagSet("coffer "+spec.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cmd.addFlags(fs)
	a.g.addFlags(fs) // global flags are accepted after the command too
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandUsage(a.stdout, spec)
			return exitOK
		}
		return a.fail(&usageError{spec: spec, msg: err.Error()})
	}
	if f := a.g.logFormat; f != "" && f != logFormatText && f != logFormatJSON {
		return a.fail(&usageError{spec: spec, msg: fmt.Sprintf("--log-format %q: want text or json", f)})
	}
	if a.g.otp != "" {
		// NB: sent with every meta request of the command; the leader checks it where a
		// gated operation is requested (two-person rule) and ignores it elsewhere.
		if !validOTP(a.g.otp) {
			return a.fail(&usageError{spec: spec, msg: fmt.Sprintf("--otp %q: want the 6 digits your authenticator shows", a.g.otp)})
		}
		ctx = meta.WithTOTP(ctx, a.g.otp)
	}
	return a.fail(cmd.run(ctx, a, pos))
}

// fail prints err (if any) and returns the exit code it maps to.
func (a *app) fail(err error) int {
	code := exitCode(err)
	if err == nil {
		return code
	}
	if id, ok := meta.ApprovalIDFrom(err); ok {
		// Not a failure to retry: the operation waits in Raft for a second admin.
		fmt.Fprintf(a.stderr, "coffer: queued for a second admin's approval as %s (two-person rule); nothing was done yet.\n"+
			"  Another admin runs: coffer admin approvals approve %s --otp CODE\n  (%s)\n", id, id, errorMessage(err))
		return code
	}
	fmt.Fprintf(a.stderr, "coffer: %s\n", errorMessage(err))
	var ue *usageError
	if errors.As(err, &ue) && ue.spec != nil {
		fmt.Fprintln(a.stderr)
		printCommandUsage(a.stderr, ue.spec)
	}
	return code
}

// usageError is a bad invocation: unknown flag, missing or extra argument. It maps to
// exit code 2 and prints the command's usage.
type usageError struct {
	spec *cmdSpec
	msg  string
}

func (e *usageError) Error() string { return e.msg }

// usagef returns a usageError for spec.
func usagef(spec *cmdSpec, format string, args ...any) error {
	return &usageError{spec: spec, msg: fmt.Sprintf(format, args...)}
}

// partialError reports a backup that committed a snapshot but skipped unreadable files.
type partialError struct {
	snapshot string // short snapshot ID
	skipped  int
}

func (e *partialError) Error() string {
	return fmt.Sprintf("backup partially failed: snapshot %s saved, but %d %s could not be read",
		e.snapshot, e.skipped, plural(e.skipped, "file", "files"))
}

// plainError replaces a long wrapped chain with one clear sentence for the user, while
// errors.Is and errors.As still see the cause.
type plainError struct {
	msg string
	err error
}

func (e *plainError) Error() string { return e.msg }
func (e *plainError) Unwrap() error { return e.err }

// plainf returns a plainError with a formatted message wrapping cause.
func plainf(cause error, format string, args ...any) error {
	return &plainError{msg: fmt.Sprintf(format, args...), err: cause}
}

// exitCode maps a command's error to the process exit code.
func exitCode(err error) int {
	var ue *usageError
	var pe *partialError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &pe):
		return exitPartial
	case queuedForApproval(err):
		return exitQueued
	default:
		return exitFailure
	}
}

// queuedForApproval reports whether the cluster stored the operation for a second admin's
// approval (meta.ApprovalIDFrom) instead of doing it.
func queuedForApproval(err error) bool {
	_, ok := meta.ApprovalIDFrom(err)
	return ok
}

// errorMessage renders err for the "coffer: " line, naming interruption plainly.
func errorMessage(err error) string {
	if errors.Is(err, context.Canceled) {
		return "interrupted"
	}
	return err.Error()
}

// parseInterspersed parses fs over args, allowing flags after positional arguments (as in
// `coffer restore latest --target /tmp/r`). A "--" ends flag parsing; everything after it
// is positional. It returns the positional arguments in order.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// isTerminal reports whether w is a terminal (for progress output).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// terminalWidth returns w's column count, or 80 when unknown.
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			return cols
		}
	}
	return 80
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
