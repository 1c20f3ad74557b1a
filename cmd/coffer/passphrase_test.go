package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPassphraseSourceOrder(t *testing.T) {
	ctx := context.Background()
	fileWithNL := writeFile(t, "from-file\n")
	tests := []struct {
		name    string
		file    string
		stdin   string
		env     string
		answers []string
		confirm bool
		want    string
		wantErr string
		prompts int
	}{
		{name: "file beats env and terminal", file: fileWithNL, env: "from-env", answers: []string{"tty"}, want: "from-file"},
		{name: "file CRLF stripped", file: writeFile(t, "pw\r\n"), want: "pw"},
		{name: "only one newline stripped", file: writeFile(t, "pw\n\n"), want: "pw\n"},
		{name: "inner spaces kept", file: writeFile(t, " p w "), want: " p w "},
		{name: "env beats terminal", env: "from-env", answers: []string{"tty"}, want: "from-env"},
		{name: "terminal last", answers: []string{"tty"}, want: "tty", prompts: 1},
		{name: "terminal confirm", answers: []string{"tty", "tty"}, confirm: true, want: "tty", prompts: 2},
		{name: "terminal confirm mismatch", answers: []string{"tty", "ytt"}, confirm: true, wantErr: "passphrases do not match", prompts: 2},
		{name: "env is not confirmed", env: "e", confirm: true, want: "e"},
		{name: "no terminal", wantErr: "use --passphrase-file FILE or set COFFER_PASSPHRASE", prompts: 1},
		{name: "stdin first line", file: "-", stdin: "from-stdin\nsecond\n", env: "e", want: "from-stdin"},
		{name: "stdin without newline", file: "-", stdin: "s", want: "s"},
		{name: "empty stdin", file: "-", stdin: "", wantErr: "is empty"},
		{name: "empty file", file: writeFile(t, "\n"), wantErr: "is empty"},
		{name: "missing file", file: filepath.Join(t.TempDir(), "nope"), wantErr: "read passphrase file"},
		{name: "empty prompt", answers: []string{""}, wantErr: "empty passphrase", prompts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _, _ := newTestApp(map[string]string{envPassphrase: tt.env})
			fp := &fakePrompter{answers: tt.answers}
			a.prompt = fp
			a.stdin = strings.NewReader(tt.stdin)
			a.g.passphraseFile = tt.file
			got, err := a.passphrase(ctx, tt.confirm)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
			} else if err != nil || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			if len(fp.prompts) != tt.prompts {
				t.Errorf("%d prompts, want %d", len(fp.prompts), tt.prompts)
			}
		})
	}
}

func TestNoTerminalErrorIsMarked(t *testing.T) {
	a, _, _ := newTestApp(nil)
	_, err := a.passphrase(context.Background(), false)
	if !errors.Is(err, errNoTerminal) {
		t.Fatalf("err %v, want errNoTerminal", err)
	}
}

func TestTTYPrompterWithoutTerminal(t *testing.T) {
	// A path that is not a terminal (a regular file) must fail as "no terminal", and a
	// missing device likewise, without blocking.
	p := ttyPrompter{path: writeFile(t, "x")}
	if _, err := p.ReadSecret(context.Background(), "pw: "); !errors.Is(err, errNoTerminal) {
		t.Fatalf("regular file: %v", err)
	}
	p = ttyPrompter{path: filepath.Join(t.TempDir(), "missing")}
	if _, err := p.ReadSecret(context.Background(), "pw: "); !errors.Is(err, errNoTerminal) {
		t.Fatalf("missing: %v", err)
	}
}
