package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// errNoTerminal: a passphrase was needed but there is no terminal to prompt on.
var errNoTerminal = errors.New("no terminal to prompt for a passphrase")

// prompter reads a secret from the user without echoing it.
type prompter interface {
	// ReadSecret shows prompt and returns the line typed (without its newline). It fails
	// with an error matching errNoTerminal when there is no terminal, and with ctx.Err()
	// when ctx is cancelled while waiting.
	ReadSecret(ctx context.Context, prompt string) ([]byte, error)
}

// passphrase returns the vault passphrase from, in order: --passphrase-file, the
// COFFER_PASSPHRASE environment variable, a terminal prompt. With confirm set (vault
// creation) a prompted passphrase must be typed twice. The caller owns the result and
// should clear it once used.
func (a *app) passphrase(ctx context.Context, confirm bool) ([]byte, error) {
	if a.g.passphraseFile != "" {
		b, err := a.readPassphraseFile()
		if err != nil {
			return nil, fmt.Errorf("read passphrase file: %w", err)
		}
		b = trimNewline(b)
		if len(b) == 0 {
			return nil, fmt.Errorf("passphrase file %s is empty", a.g.passphraseFile)
		}
		return b, nil
	}
	if p := a.getenv(envPassphrase); p != "" {
		return []byte(p), nil
	}
	p, err := a.prompt.ReadSecret(ctx, "Vault passphrase: ")
	if errors.Is(err, errNoTerminal) {
		return nil, fmt.Errorf("a passphrase is needed: use --passphrase-file FILE or set %s (%w)", envPassphrase, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	if len(p) == 0 {
		return nil, errors.New("empty passphrase")
	}
	if confirm {
		again, err := a.prompt.ReadSecret(ctx, "Repeat passphrase: ")
		if err != nil {
			clear(p)
			return nil, fmt.Errorf("read passphrase: %w", err)
		}
		same := bytes.Equal(p, again)
		clear(again)
		if !same {
			clear(p)
			return nil, errors.New("passphrases do not match")
		}
	}
	return p, nil
}

// readPassphraseFile reads --passphrase-file: the whole file, or for "-" the first line
// of stdin.
func (a *app) readPassphraseFile() ([]byte, error) {
	if a.g.passphraseFile != "-" {
		return os.ReadFile(a.g.passphraseFile)
	}
	line, err := bufio.NewReader(a.stdin).ReadBytes('\n')
	if err == io.EOF {
		err = nil
	}
	return line, err
}

// trimNewline removes one trailing "\n" or "\r\n" (as editors and `echo` leave).
func trimNewline(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// ttyPrompter prompts on the controlling terminal (path, normally /dev/tty), so that
// prompts work even when stdin and stdout are redirected.
type ttyPrompter struct{ path string }

// ReadSecret implements prompter.
func (p ttyPrompter) ReadSecret(ctx context.Context, prompt string) ([]byte, error) {
	tty, err := os.OpenFile(p.path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoTerminal, err)
	}
	fd := int(tty.Fd()) // NB: Fd puts the file in blocking mode, which ReadPassword needs.
	if !term.IsTerminal(fd) {
		tty.Close()
		return nil, fmt.Errorf("%w: %s is not a terminal", errNoTerminal, p.path)
	}
	state, err := term.GetState(fd)
	if err != nil {
		tty.Close()
		return nil, fmt.Errorf("%w: %v", errNoTerminal, err)
	}
	fmt.Fprint(tty, prompt)
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := term.ReadPassword(fd)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		fmt.Fprintln(tty)
		tty.Close()
		return r.b, r.err
	case <-ctx.Done():
		// NB: a blocked terminal read cannot be interrupted. Restore echo so the shell is
		// usable, and leave the reader goroutine blocked: cancellation here means the
		// process is about to exit (SIGINT/SIGTERM), which ends it.
		_ = term.Restore(fd, state)
		fmt.Fprintln(tty)
		return nil, ctx.Err()
	}
}
