package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client/clientconfig"
)

// fakePrompter answers passphrase prompts from a script, or fails like a missing terminal.
type fakePrompter struct {
	answers []string
	prompts []string
}

func (p *fakePrompter) ReadSecret(_ context.Context, prompt string) ([]byte, error) {
	p.prompts = append(p.prompts, prompt)
	if len(p.answers) == 0 {
		return nil, fmt.Errorf("%w: test has no terminal", errNoTerminal)
	}
	a := p.answers[0]
	p.answers = p.answers[1:]
	return []byte(a), nil
}

// newTestApp returns an app writing to buffers, reading env from the map, with no terminal.
func newTestApp(env map[string]string) (*app, *bytes.Buffer, *bytes.Buffer) {
	var stdout, stderr bytes.Buffer
	a := &app{
		stdin:  strings.NewReader(""),
		stdout: &stdout,
		stderr: &stderr,
		getenv: func(k string) string { return env[k] },
		prompt: &fakePrompter{},
		now:    func() time.Time { return time.Unix(1700000000, 0) },
		loc:    time.UTC,
	}
	return a, &stdout, &stderr
}

// runCLI runs one invocation without a terminal and returns its exit code and output.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	a, stdout, stderr := newTestApp(env)
	code := a.main(context.Background(), args)
	return code, stdout.String(), stderr.String()
}

func TestRunEntryPointHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--help"}, strings.NewReader(""), &stdout, &stderr,
		func(string) string { return "" })
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "Usage: coffer") || stderr.Len() != 0 {
		t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantErr  string // on stderr after "coffer: "
		wantHelp string // usage text that must follow
	}{
		{"no command", nil, "no command given", "Commands:"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`, "Commands:"},
		{"unknown global flag", []string{"--bogus", "snapshots"}, "flag provided but not defined: -bogus", "Commands:"},
		{"unknown command flag", []string{"snapshots", "--bogus"}, "flag provided but not defined: -bogus", "Usage: coffer snapshots"},
		{"backup without path", []string{"backup"}, "backup needs at least one PATH", "Usage: coffer backup [flags] PATH..."},
		{"backup with only tags", []string{"backup", "--tag", "x"}, "backup needs at least one PATH", "Usage: coffer backup"},
		{"backup empty tag", []string{"backup", "--tag", "", "/tmp"}, "empty value", "Usage: coffer backup"},
		{"restore without target", []string{"restore", "latest"}, "restore needs --target DIR", "Usage: coffer restore"},
		{"restore without snap", []string{"restore", "--target", "/tmp/x"}, "restore needs exactly one SNAP", "Usage: coffer restore"},
		{"ls without snap", []string{"ls"}, "ls needs SNAP", "Usage: coffer ls"},
		{"ls too many", []string{"ls", "a", "b", "c"}, "got 3 arguments", "Usage: coffer ls"},
		{"dump one arg", []string{"dump", "latest"}, "dump needs SNAP and FILE", "Usage: coffer dump"},
		{"init with arg", []string{"init", "x"}, "init takes no arguments", "Usage: coffer init"},
		{"admin alone", []string{"admin"}, `"admin" needs a subcommand`, "admin status"},
		{"admin unknown", []string{"admin", "explode"}, `unknown command "admin explode"`, "Subcommands:"},
		{"admin status extra", []string{"admin", "status", "now"}, "admin status takes no arguments", "Usage: coffer admin status"},
		{"help unknown", []string{"help", "nope"}, `no help for "nope"`, "Usage: coffer help"},
		{"version extra", []string{"version", "x"}, "version takes no arguments", "Usage: coffer version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, tt.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, exitUsage, stderr)
			}
			if !strings.HasPrefix(stderr, "coffer: ") || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr %q, want coffer: ...%s", stderr, tt.wantErr)
			}
			if !strings.Contains(stderr, tt.wantHelp) {
				t.Errorf("stderr lacks usage %q:\n%s", tt.wantHelp, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

func TestHelpGoesToStdoutAndExits0(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage: coffer [global flags] COMMAND", "backup", "admin status", "Exit codes"}},
		{[]string{"-h"}, []string{"Commands:"}},
		{[]string{"help"}, []string{"Commands:"}},
		{[]string{"help", "backup"}, []string{"Usage: coffer backup [flags] PATH...", "--tag T", "Examples:", "coffer backup /etc /home"}},
		{[]string{"backup", "--help"}, []string{"Usage: coffer backup [flags] PATH...", "--tag T"}},
		{[]string{"restore", "-h"}, []string{"--target DIR", "--include PATH", "--no-cache", "local key cache"}},
		{[]string{"dump", "-h"}, []string{"--cache-dir DIR", "--no-cache", "local key cache"}},
		{[]string{"ls", "-h"}, []string{"--max-entries N", "--cache-dir DIR", "--no-cache", "local tree"}},
		{[]string{"snapshots", "-h"}, []string{"--cache-dir DIR", "--no-cache", "local key cache"}},
		{[]string{"help", "admin", "status"}, []string{"Usage: coffer admin status", "2 s timeout"}},
		{[]string{"admin", "status", "--help"}, []string{"Usage: coffer admin status"}},
		{[]string{"help", "admin"}, []string{"Subcommands:", "admin status"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, tt.args...)
			if code != exitOK || stderr != "" {
				t.Fatalf("exit %d stderr %q", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("help lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands() {
		if c.short == "" || len(c.examples) == 0 || c.new == nil {
			t.Errorf("command %q: short %q, %d examples", c.name, c.short, len(c.examples))
		}
		code, stdout, _ := runCLI(t, nil, append(strings.Fields(c.name), "--help")...)
		if code != exitOK || !strings.Contains(stdout, "Usage: coffer "+c.name) {
			t.Errorf("coffer %s --help: exit %d\n%s", c.name, code, stdout)
		}
	}
}

func TestMissingConfigIsFailureNotUsage(t *testing.T) {
	// The test's working directory (the package dir) has no coffer.yaml.
	if _, err := os.Stat(defaultConfigFile); err == nil {
		t.Skip("a coffer.yaml exists in the package directory")
	}
	code, stdout, stderr := runCLI(t, nil, "snapshots")
	if code != exitFailure {
		t.Fatalf("exit %d, want %d; stderr %q", code, exitFailure, stderr)
	}
	if !strings.Contains(stderr, "coffer: no client configuration") || strings.Contains(stderr, "Usage:") || stdout != "" {
		t.Fatalf("stdout %q stderr %q", stdout, stderr)
	}
}

func TestBadConfigFileNamed(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("meta: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, map[string]string{envConfig: bad}, "admin", "status")
	if code != exitFailure || !strings.Contains(stderr, "no meta addresses") {
		t.Fatalf("exit %d stderr %q", code, stderr)
	}
}

func TestConfigAndVaultResolution(t *testing.T) {
	a, _, _ := newTestApp(map[string]string{envConfig: "/env/coffer.yaml"})
	if p, err := a.configPath(); err != nil || p != "/env/coffer.yaml" {
		t.Fatalf("env: %q %v", p, err)
	}
	a.g.config = "/flag/coffer.yaml"
	if p, err := a.configPath(); err != nil || p != "/flag/coffer.yaml" {
		t.Fatalf("flag over env: %q %v", p, err)
	}
	b, _, _ := newTestApp(nil)
	if _, err := os.Stat(defaultConfigFile); err != nil {
		if _, err := b.configPath(); !errors.Is(err, errNoConfig) {
			t.Fatalf("nothing set: %v, want errNoConfig", err)
		}
	}

	for _, tt := range []struct{ flag, cfg, want string }{
		{"", "", "default"},
		{"", "fromcfg", "fromcfg"},
		{"fromflag", "fromcfg", "fromflag"},
	} {
		a, _, _ := newTestApp(nil)
		a.g.vault = tt.flag
		if got := a.vaultID(clientconfig.File{Vault: tt.cfg}); string(got) != tt.want {
			t.Errorf("vault flag %q cfg %q: %q, want %q", tt.flag, tt.cfg, got, tt.want)
		}
	}
}

func TestGlobalFlagsBeforeAndAfterCommand(t *testing.T) {
	for _, args := range [][]string{
		{"--json", "--vault", "v1", "-q", "version"},
		{"version", "--json", "--vault", "v1", "-q"},
		{"--vault", "v1", "version", "--quiet", "--json"},
	} {
		a, stdout, _ := newTestApp(nil)
		if code := a.main(context.Background(), args); code != exitOK {
			t.Fatalf("%v: exit %d", args, code)
		}
		if !a.g.json || !a.g.quiet || a.g.vault != "v1" {
			t.Errorf("%v: globals %+v", args, a.g)
		}
		if !strings.HasPrefix(stdout.String(), "{") {
			t.Errorf("%v: --json ignored: %q", args, stdout.String())
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args     []string
		wantPos  []string
		wantTags []string
		target   string
	}{
		{[]string{"a", "b"}, []string{"a", "b"}, nil, ""},
		{[]string{"--tag", "x", "a", "--tag", "y", "b"}, []string{"a", "b"}, []string{"x", "y"}, ""},
		{[]string{"latest", "--target", "/t"}, []string{"latest"}, nil, "/t"},
		{[]string{"a", "--", "--tag", "-b"}, []string{"a", "--tag", "-b"}, nil, ""},
		{[]string{"-", "x"}, []string{"-", "x"}, nil, ""},
		{nil, nil, nil, ""},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var tags stringList
		var target string
		fs.Var(&tags, "tag", "")
		fs.StringVar(&target, "target", "", "")
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if !reflect.DeepEqual(pos, tt.wantPos) || !reflect.DeepEqual([]string(tags), tt.wantTags) || target != tt.target {
			t.Errorf("%v: pos %q tags %q target %q", tt.args, pos, tags, target)
		}
	}
}

func TestExitCodeMapping(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{context.Canceled, 1},
		{usagef(nil, "bad"), 2},
		{fmt.Errorf("wrapped: %w", usagef(nil, "bad")), 2},
		{&partialError{snapshot: "1a2b3c4d", skipped: 2}, 3},
		{fmt.Errorf("wrapped: %w", &partialError{snapshot: "1a2b3c4d", skipped: 1}), 3},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestFailMessages(t *testing.T) {
	a, _, stderr := newTestApp(nil)
	if code := a.fail(fmt.Errorf("backup: %w", context.Canceled)); code != exitFailure {
		t.Fatalf("exit %d", code)
	}
	if got := stderr.String(); got != "coffer: interrupted\n" {
		t.Errorf("cancel message %q", got)
	}
	stderr.Reset()
	if code := a.fail(&partialError{snapshot: "1a2b3c4d", skipped: 2}); code != exitPartial {
		t.Fatalf("exit %d", code)
	}
	if got := stderr.String(); got != "coffer: backup partially failed: snapshot 1a2b3c4d saved, but 2 files could not be read\n" {
		t.Errorf("partial message %q", got)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := runCLI(t, nil, "version")
	if code != exitOK || !strings.HasPrefix(stdout, "coffer "+version) || !strings.Contains(stdout, "go1.") {
		t.Fatalf("exit %d %q", code, stdout)
	}
}

func TestPlainErrorKeepsCause(t *testing.T) {
	cause := fmt.Errorf("client: open vault v: %w", os.ErrNotExist)
	err := plainf(cause, "vault %q does not exist", "v")
	if err.Error() != `vault "v" does not exist` || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%v", err)
	}
	if exitCode(err) != exitFailure {
		t.Errorf("exit %d", exitCode(err))
	}
}
