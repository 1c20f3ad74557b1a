package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// authenticator answers the enrollment's code prompt like an authenticator app that
// scanned what the command printed: it reads the secret from the output so far.
type authenticator struct {
	out    *bytes.Buffer
	secret string
}

var secretRe = regexp.MustCompile(`(?:secret: |"secret":")([A-Z2-7]+)`)

func (p *authenticator) ReadSecret(_ context.Context, prompt string) ([]byte, error) {
	m := secretRe.FindStringSubmatch(p.out.String())
	if m == nil {
		return nil, fmt.Errorf("%w: no secret printed before %q", errNoTerminal, prompt)
	}
	p.secret = m[1]
	code, err := totp.GenerateCodeCustom(p.secret, time.Now(), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	return []byte(code), err
}

// enrollCLI runs `coffer admin mfa enroll` with env and returns the enrolled secret and
// the output.
func enrollCLI(t *testing.T, env map[string]string, args ...string) (string, string) {
	t.Helper()
	a, stdout, stderr := newTestApp(env)
	auth := &authenticator{out: stdout}
	a.prompt = auth
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if code := a.main(ctx, append(args, "admin", "mfa", "enroll")); code != exitOK {
		t.Fatalf("mfa enroll %v: exit %d: %s %s", args, code, stdout, stderr)
	}
	return auth.secret, stdout.String()
}

// TestCLIApprovalsAndMFA drives the two-person rule through the CLI against a cluster
// under the default approval policy: two admins enroll MFA (QR code and otpauth URL, the
// first code from the prompt); one admin's vault delete exits 4 (queued) naming the
// request once the requester gives their own code (--otp; refused without it); the
// requester cannot approve it; the second admin needs a code (no terminal: --otp),
// approves with one and the delete runs once; list --json shows it executed.
func TestCLIApprovalsAndMFA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := nodetest.New(t, nodetest.Opts{TwoPerson: true})
	dir := t.TempDir()
	adminEnv := map[string]string{"COFFER_CONFIG": node.DevClientConfig(c.Dir), "COFFER_PASSPHRASE": "approvals test passphrase",
		"COFFER_CACHE_DIR": filepath.Join(dir, "cache")}
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	key, csr, bobPEM := filepath.Join(dir, "bob-key.pem"), filepath.Join(dir, "bob.csr"), filepath.Join(dir, "bob.pem")
	if code, out, stderr := cli(t, nil, "cert", "request", "--principal", "bob", "--key", key, "--csr", csr); code != exitOK {
		t.Fatalf("cert request: exit %d: %s %s", code, out, stderr)
	}
	if code, out, stderr := cli(t, adminEnv, "admin", "cert", "issue", "--role", "admin", "--principal", "bob", "--csr", csr, "--out", bobPEM); code != exitOK {
		t.Fatalf("cert issue: exit %d: %s %s", code, out, stderr)
	}
	bobCfg := filepath.Join(dir, "bob.yaml")
	if err := clientconfig.Save(bobCfg, clientconfig.File{Meta: f.Meta, CA: f.CA, Cert: bobPEM, Key: key}); err != nil {
		t.Fatal(err)
	}
	bobEnv := map[string]string{"COFFER_CONFIG": bobCfg}

	adminSecret, out := enrollCLI(t, adminEnv)
	if !strings.Contains(out, "otpauth://totp/coffer:dev-admin?") || !strings.Contains(out, "█") || !strings.Contains(out, "enrolled MFA for dev-admin") {
		t.Fatalf("mfa enroll output lacks the URL, the QR code or the confirmation:\n%s", out)
	}
	bobSecret, out := enrollCLI(t, bobEnv, "--json")
	var enrolled mfaEnrollJSON
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &enrolled); err != nil || enrolled.Principal != "bob" || enrolled.Secret != bobSecret {
		t.Fatalf("mfa enroll --json: %q (%v)", out, err)
	}
	if code, _, stderr := cli(t, bobEnv, "admin", "mfa", "enroll"); code != exitFailure || !strings.Contains(stderr, "terminal") {
		t.Fatalf("enroll without a terminal: exit %d: %s", code, stderr)
	}

	if code, _, stderr := cli(t, adminEnv, "--vault", "gone", "init"); code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	// The requester has MFA enrolled: without their code (a stolen certificate alone) the
	// request is refused and nothing is queued.
	code, _, stderr := cli(t, adminEnv, "--vault", "gone", "vault", "delete", "--reason", "retired")
	if code != exitFailure || !strings.Contains(stderr, "--otp CODE") || strings.Contains(stderr, "queued") {
		t.Fatalf("vault delete without the requester's code: exit %d: %s", code, stderr)
	}
	if code, _, stderr := cli(t, adminEnv, "--otp", "12345", "--vault", "gone", "vault", "delete"); code != exitUsage {
		t.Fatalf("--otp of 5 digits: exit %d: %s", code, stderr)
	}
	// Enrollment used the current step: the next one is fresh.
	adminCode, err := totp.GenerateCodeCustom(adminSecret, time.Now().Add(30*time.Second), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr = cli(t, adminEnv, "--otp", adminCode, "--vault", "gone", "vault", "delete", "--reason", "retired")
	m := regexp.MustCompile(`queued for a second admin's approval as (ap-[0-9a-f]{16})`).FindStringSubmatch(stderr)
	if code != exitQueued || m == nil || !strings.Contains(stderr, "coffer admin approvals approve "+m[1]) {
		t.Fatalf("vault delete by one admin: exit %d (want %d): %s", code, exitQueued, stderr)
	}
	id := m[1]
	if code, out, stderr := cli(t, adminEnv, "admin", "approvals", "list"); code != exitOK || !strings.Contains(out, id) || !strings.Contains(out, "pending") {
		t.Fatalf("approvals list: exit %d: %s %s", code, out, stderr)
	}
	if code, _, stderr := cli(t, adminEnv, "admin", "approvals", "approve", id, "--otp", "123456"); code != exitFailure || !strings.Contains(stderr, "cannot decide") {
		t.Fatalf("self-approval: exit %d: %s", code, stderr)
	}
	if code, _, stderr := cli(t, bobEnv, "admin", "approvals", "approve", id); code != exitFailure || !strings.Contains(stderr, "--otp") {
		t.Fatalf("approval without a code or terminal: exit %d: %s", code, stderr)
	}
	if code, _, stderr := cli(t, bobEnv, "admin", "approvals", "approve", "ap-nothex"); code != exitUsage {
		t.Fatalf("malformed ID: exit %d: %s", code, stderr)
	}
	// Enrollment used the current step: the next one is fresh.
	otpCode, err := totp.GenerateCodeCustom(bobSecret, time.Now().Add(30*time.Second), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr = cli(t, bobEnv, "admin", "approvals", "approve", id, "--otp", otpCode, "--reason", "ticket 4711")
	if code != exitOK || !strings.Contains(out, "executed") {
		t.Fatalf("second admin's approval: exit %d: %s %s", code, out, stderr)
	}
	code, out, stderr = cli(t, bobEnv, "--json", "admin", "approvals", "list")
	var rs []meta.ApprovalRequest
	if code != exitOK || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 || rs[0].State != meta.ApprovalExecuted ||
		rs[0].Decider == nil || rs[0].Decider.Name != "bob" || rs[0].Requester.Name != "dev-admin" {
		t.Fatalf("approvals list --json after approval: exit %d: %s %s", code, out, stderr)
	}
	code, out, stderr = cli(t, adminEnv, "--json", "admin", "audit")
	if code != exitOK || !strings.Contains(out, `"action":"approval execute vault-delete"`) || !strings.Contains(out, `"action":"vault delete"`) {
		t.Fatalf("audit after approval: exit %d: %s %s", code, out, stderr)
	}
}
