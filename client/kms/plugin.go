package kms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// DefaultPluginTimeout bounds one plugin run when the context has no deadline.
const DefaultPluginTimeout = 30 * time.Second

// Plugin is a KMS reached through an executable: each operation runs Path (with Args) once,
// writes one Request to its stdin and reads one Response from its stdout. A plugin
// answers a refusal with an error response and exit status 0; a non-zero exit status
// without a valid response is reported as ErrUnavailable with the end of its stderr.
type Plugin struct {
	Name string   // the name wraps record (for messages)
	Path string   // the executable
	Args []string // extra arguments
	// Env, when not nil, is the plugin's whole environment (default: the agent's).
	Env []string
	// Timeout bounds one run (default DefaultPluginTimeout).
	Timeout time.Duration
}

// limitedBuffer keeps at most max bytes and remembers that more came.
type limitedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room < len(p) {
		l.over = true
		if room > 0 {
			l.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return l.buf.Write(p)
}

func (p *Plugin) run(ctx context.Context, req Request) (Response, error) {
	req.Protocol = Protocol
	if err := req.check(); err != nil {
		return Response{}, fmt.Errorf("kms: plugin %s: %w", p.Name, err)
	}
	in, err := json.Marshal(req)
	if err != nil {
		return Response{}, fmt.Errorf("kms: plugin %s: encode request: %w", p.Name, err)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultPluginTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Path, p.Args...)
	cmd.Env = p.Env
	cmd.Stdin = bytes.NewReader(append(in, '\n'))
	stdout := &limitedBuffer{max: MaxMessageSize}
	stderr := &limitedBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	runErr := cmd.Run()
	clear(in)
	unavailable := func(format string, args ...any) (Response, error) {
		return Response{}, &Error{Op: req.Op, KeyID: req.KeyID, KeyVersion: req.KeyVersion, Kind: ErrUnavailable,
			Message: fmt.Sprintf("plugin %s (%s): ", p.Name, p.Path) + fmt.Sprintf(format, args...)}
	}
	if ctx.Err() != nil {
		return unavailable("no answer within %s", timeout)
	}
	if stdout.over {
		return Response{}, fmt.Errorf("kms: plugin %s: %w: response over %d bytes", p.Name, ErrInvalid, MaxMessageSize)
	}
	if runErr != nil && stdout.buf.Len() == 0 {
		var ee *exec.ExitError
		if errors.As(runErr, &ee) {
			return unavailable("%v: %s", runErr, sanitize(strings.TrimSpace(stderr.buf.String())))
		}
		return unavailable("%v", runErr)
	}
	resp, err := DecodeResponse(req, stdout.buf.Bytes())
	clear(stdout.buf.Bytes())
	if err != nil {
		var ke *Error
		if errors.As(err, &ke) {
			return Response{}, err
		}
		return Response{}, fmt.Errorf("kms: plugin %s (%s): %w", p.Name, p.Path, err)
	}
	if runErr != nil {
		return unavailable("a valid response but %v", runErr)
	}
	return resp, nil
}

func vaultContext(vault string) map[string]string { return map[string]string{"vault": vault} }

// Wrap implements Client.
func (p *Plugin) Wrap(ctx context.Context, vault, keyID string, plaintext []byte) (Wrapped, error) {
	r, err := p.run(ctx, Request{Op: OpWrap, KeyID: keyID, Plaintext: plaintext, Context: vaultContext(vault)})
	if err != nil {
		return Wrapped{}, err
	}
	return Wrapped{KeyID: r.KeyID, KeyVersion: r.KeyVersion, Ciphertext: r.Ciphertext}, nil
}

// Unwrap implements Client.
func (p *Plugin) Unwrap(ctx context.Context, vault string, w Wrapped) ([]byte, error) {
	r, err := p.run(ctx, Request{Op: OpUnwrap, KeyID: w.KeyID, KeyVersion: w.KeyVersion, Ciphertext: w.Ciphertext, Context: vaultContext(vault)})
	if err != nil {
		return nil, err
	}
	return r.Plaintext, nil
}

// Rotate implements Client.
func (p *Plugin) Rotate(ctx context.Context, vault, keyID string) (string, error) {
	r, err := p.run(ctx, Request{Op: OpRotate, KeyID: keyID, Context: vaultContext(vault)})
	if err != nil {
		return "", err
	}
	return r.KeyVersion, nil
}
