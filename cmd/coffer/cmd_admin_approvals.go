package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/cofferhq/coffer/meta"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	qrcode "github.com/skip2/go-qrcode"
)

// Two-person rule and admin MFA (issue 17): coffer admin approvals list|approve|deny,
// coffer admin mfa enroll.

func adminApprovalsListSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin approvals list",
		short: "list operations waiting for (or decided by) a second admin",
		long: `Prints the requests of the two-person rule, newest first: ID, operation,
requester, state (pending, approved, denied, executed, failed, expired), expiry
and summary of the stored parameters. A pending request past its expiry is
listed as expired and never executes. Admin certificate only.

With --json an array is printed; each element has id, operation, method,
summary, vault, requester ({name, role}), created, expires, state, decider
({name, role}, once decided), decided_at and result.`,
		examples: []string{"coffer admin approvals list", "coffer admin approvals list --json | jq -r '.[] | select(.state == \"pending\") | .id'"},
		new:      func() command { return &adminApprovalsListCmd{} },
	}
}

type adminApprovalsListCmd struct{}

func (c *adminApprovalsListCmd) addFlags(*flag.FlagSet) {}

func (c *adminApprovalsListCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminApprovalsListSpec(), "admin approvals list takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	rs, err := s.meta.ListApprovals(ctx)
	if err != nil {
		return retentionErr(err, "list approval requests")
	}
	if a.g.json {
		if rs == nil {
			rs = []meta.ApprovalRequest{}
		}
		return writeJSON(a.stdout, rs)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tOPERATION\tREQUESTER\tSTATE\tEXPIRES\tDECIDER\tSUMMARY")
	for _, r := range rs {
		decider := "-"
		if r.Decider != nil {
			decider = r.Decider.Name
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Operation, r.Requester.Name, r.State,
			r.Expires.In(a.loc).Format("2006-01-02 15:04:05"), decider, r.Summary)
	}
	tw.Flush()
	fmt.Fprintf(a.stdout, "%d %s\n", len(rs), plural(len(rs), "request", "requests"))
	return nil
}

func adminApprovalsApproveSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin approvals approve",
		short: "approve a stored request: it executes once, as its requester",
		args:  "ID",
		long: `Approves request ID (from "coffer admin approvals list") with a current TOTP
code of your enrolled authenticator (--otp CODE, or asked for on the terminal).
The cluster refuses the requester themself, an expired or already decided
request, a code already used (replay), and after 5 wrong codes in 15 minutes
every code. Once approved, the stored operation executes exactly once with the
parameters it was requested with, as its requester; the request ends executed,
or failed with the operation's own refusal. Every step is in the audit log.

With --json the request in its final state (as in "admin approvals list --json").`,
		examples: []string{"coffer admin approvals approve ap-3f9c0a1b2c3d4e5f --reason 'ticket 4711'"},
		new:      func() command { return &adminApprovalDecideCmd{approve: true} },
	}
}

func adminApprovalsDenySpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin approvals deny",
		short: "deny a stored request: it never executes",
		args:  "ID",
		long: `Denies request ID with a current TOTP code (--otp CODE, or asked for on the
terminal); the reason is recorded on the request and in the audit log. The
requester cannot decide their own request.

With --json the denied request (as in "admin approvals list --json").`,
		examples: []string{"coffer admin approvals deny ap-3f9c0a1b2c3d4e5f --reason 'not planned'"},
		new:      func() command { return &adminApprovalDecideCmd{approve: false} },
	}
}

// adminApprovalDecideCmd takes its TOTP code from the global --otp (or asks for one).
type adminApprovalDecideCmd struct {
	approve bool
	reason  string
}

func (c *adminApprovalDecideCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.reason, "reason", "", "why (recorded on the request and in the audit log)")
}

func (c *adminApprovalDecideCmd) run(ctx context.Context, a *app, args []string) error {
	spec, verb := adminApprovalsDenySpec(), "deny"
	if c.approve {
		spec, verb = adminApprovalsApproveSpec(), "approve"
	}
	if len(args) != 1 {
		return usagef(spec, "admin approvals %s takes one request ID", verb)
	}
	if err := meta.ValidApprovalID(args[0]); err != nil {
		return usagef(spec, "%v", err)
	}
	code, err := a.otpCode(ctx, a.g.otp)
	if err != nil {
		return err
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	r, err := s.meta.DecideApproval(ctx, args[0], c.approve, code, c.reason)
	if err != nil {
		return retentionErr(err, "%s %s", verb, args[0])
	}
	if a.g.json {
		return writeJSON(a.stdout, r)
	}
	switch r.State {
	case meta.ApprovalExecuted:
		fmt.Fprintf(a.stdout, "approved %s: %s executed (%s)\n", r.ID, r.Operation, r.Summary)
	case meta.ApprovalFailed:
		fmt.Fprintf(a.stdout, "approved %s: %s was executed and refused: %s\n", r.ID, r.Operation, r.Result)
		return fmt.Errorf("approved %s: the operation failed: %s", r.ID, r.Result)
	case meta.ApprovalApproved:
		fmt.Fprintf(a.stdout, "approved %s: %s; it runs when %s asks again (before %s)\n", r.ID, r.Summary, r.Requester.Name,
			r.Expires.In(a.loc).Format("2006-01-02 15:04:05"))
	default:
		fmt.Fprintf(a.stdout, "%s %s: %s\n", verb+"d", r.ID, r.State)
	}
	return nil
}

// otpCode returns flag, or asks for a TOTP code on the terminal.
func (a *app) otpCode(ctx context.Context, flagValue string) (string, error) {
	code := strings.TrimSpace(flagValue)
	if code == "" {
		b, err := a.prompt.ReadSecret(ctx, "TOTP code: ")
		if errors.Is(err, errNoTerminal) {
			return "", fmt.Errorf("a TOTP code is needed: give --otp CODE (no terminal to ask on)")
		}
		if err != nil {
			return "", err
		}
		code = strings.TrimSpace(string(b))
	}
	if !validOTP(code) {
		return "", fmt.Errorf("TOTP code %q: want the 6 digits your authenticator shows", code)
	}
	return code, nil
}

// validOTP reports whether code has the form of a TOTP code: 6 digits.
func validOTP(code string) bool {
	return len(code) == 6 && strings.Trim(code, "0123456789") == ""
}

func adminMFAEnrollSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin mfa enroll",
		short: "enroll a TOTP authenticator for your admin certificate",
		long: `Generates a TOTP secret (RFC 6238: SHA-1, 6 digits, 30 s) for the principal of
your admin certificate, shows it as a QR code in the terminal and as an
otpauth:// URL, and asks for the first code your authenticator app shows. The
cluster checks the code, stores the secret sealed under the cluster seal key
(only meta servers hold it) and counts that code as used. A principal enrolls
once; enrolling again is refused. The two-person rule is armed once two admins
have enrolled.

With --json, {"principal", "issuer", "url", "secret"} is printed before the
code is asked for (the QR code is not drawn).`,
		examples: []string{"coffer admin mfa enroll"},
		new:      func() command { return &adminMFAEnrollCmd{} },
	}
}

type adminMFAEnrollCmd struct{}

func (c *adminMFAEnrollCmd) addFlags(*flag.FlagSet) {}

// mfaEnrollJSON is `coffer admin mfa enroll --json`.
type mfaEnrollJSON struct {
	Principal string `json:"principal"`
	Issuer    string `json:"issuer"`
	URL       string `json:"url"`
	Secret    string `json:"secret"`
}

func (c *adminMFAEnrollCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminMFAEnrollSpec(), "admin mfa enroll takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "coffer", AccountName: s.principal, Period: 30,
		Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return fmt.Errorf("mfa enroll: generate a secret: %w", err)
	}
	if a.g.json {
		if err := writeJSON(a.stdout, mfaEnrollJSON{Principal: s.principal, Issuer: key.Issuer(), URL: key.URL(), Secret: key.Secret()}); err != nil {
			return err
		}
	} else {
		qr, err := qrcode.New(key.URL(), qrcode.Medium)
		if err != nil {
			return fmt.Errorf("mfa enroll: QR code: %w", err)
		}
		fmt.Fprintf(a.stdout, "Scan this with your authenticator app (principal %s):\n\n%s\n", s.principal, qr.ToSmallString(false))
		fmt.Fprintf(a.stdout, "or enter the URL or the secret by hand:\n  %s\n  secret: %s\n\n", key.URL(), key.Secret())
	}
	b, err := a.prompt.ReadSecret(ctx, "code shown by the authenticator: ")
	if errors.Is(err, errNoTerminal) {
		return fmt.Errorf("mfa enroll: the first code is asked for on a terminal, and there is none")
	}
	if err != nil {
		return err
	}
	if err := s.meta.EnrollMFA(ctx, key.Secret(), strings.TrimSpace(string(b))); err != nil {
		return retentionErr(err, "enroll MFA for %s", s.principal)
	}
	if !a.g.json {
		fmt.Fprintf(a.stdout, "enrolled MFA for %s\n", s.principal)
	}
	return nil
}
