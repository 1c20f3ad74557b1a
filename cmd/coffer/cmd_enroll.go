package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/client/enroll"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport/pki"
)

func adminEnrollTokenCreateSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin enroll-token create",
		short: "create a one-time token that enrolls a backup agent",
		long: `Creates a one-time enrollment token for the backup agent named by --name of
the vault named by --vault (both required) and prints it. On the protected
host, "coffer agent enroll --token TOKEN" turns it into a backup-agent
certificate for that vault only, under that name: the token fixes the name
(the certificate's principal), the host cannot choose another. The token is
valid for --ttl of cluster time (default 24h, at most 30d) and for one
enrollment. A name is refused while another live token binds it, while an
agent enrolled under it holds a certificate that is not revoked (to give the
name to a new host, "coffer admin cert revoke --principal NAME" first), and
when it is a node's ID.

The cluster keeps only the token's SHA-256; the token is shown once, here.
Treat it like a password. Admin certificate only; audited (by token ID, never
the token).

Each --label KEY=VALUE is given to the enrolled host: backup policies
assigned by label (coffer admin policy create --label) apply to it from its
first minute.

With --json an object is printed: token, id, vault, name, expires.`,
		examples: []string{
			"coffer admin enroll-token create --vault web01 --name web01",
			"coffer admin enroll-token create --vault db --name db01 --ttl 2h",
			"coffer admin enroll-token create --vault web --name web02 --label role=web --label env=prod",
		},
		new: func() command { return &enrollTokenCmd{} },
	}
}

// enrollTokenCmd creates an enrollment token.
type enrollTokenCmd struct {
	ttl    string
	name   string
	labels labelFlag
}

func (c *enrollTokenCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ttl, "ttl", "24h", "how long the token is valid (`DURATION`: 30m, 24h, 7d; at most 30d)")
	fs.StringVar(&c.name, "name", "", "the agent's `NAME` (its certificate principal; required, fixed by the token)")
	fs.Var(&c.labels, "label", "give the enrolled host label `KEY=VALUE` (repeatable; backup policies select hosts by label)")
}

// enrollTokenJSON is `coffer admin enroll-token create --json`.
type enrollTokenJSON struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Vault   string    `json:"vault"`
	Name    string    `json:"name,omitempty"`
	Expires time.Time `json:"expires"`
}

func (c *enrollTokenCmd) run(ctx context.Context, a *app, args []string) error {
	spec := adminEnrollTokenCreateSpec()
	if len(args) > 0 {
		return usagef(spec, "admin enroll-token create takes no arguments, got %q", args[0])
	}
	if a.g.vault == "" {
		return usagef(spec, "--vault is required: the vault the agent will back up to")
	}
	ttl, err := parseLongDuration(c.ttl)
	if err != nil || ttl <= 0 || ttl > meta.MaxEnrollTTL {
		return usagef(spec, "--ttl %q: want a duration in (0, 30d]", c.ttl)
	}
	if c.name == "" {
		return usagef(spec, "--name is required: the token fixes the agent's name, the host cannot choose one")
	}
	if err := meta.ValidateAgentName(c.name); err != nil {
		return usagef(spec, "--name: %v", err)
	}
	if err := meta.ValidateVaultID(meta.VaultID(a.g.vault)); err != nil {
		return usagef(spec, "--vault: %v", err)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	tok, rec, err := s.meta.CreateEnrollToken(ctx, meta.VaultID(a.g.vault), c.name, ttl, c.labels.m)
	if err != nil {
		return retentionErr(err, "create an enrollment token")
	}
	if a.g.json {
		return writeJSON(a.stdout, enrollTokenJSON{Token: tok, ID: rec.ID, Vault: string(rec.Vault), Name: rec.Name, Expires: rec.Expires})
	}
	fmt.Fprintf(a.stdout, "%s\n", tok)
	fmt.Fprintf(a.stderr, "one-time enrollment token %s for agent %s of vault %q, valid until %s (cluster time)\non the host: coffer agent enroll --token TOKEN --meta %s --ca ca.pem --out DIR\n",
		rec.ID, rec.Name, rec.Vault, rec.Expires.In(a.loc).Format(time.RFC3339), strings.Join(s.cfg.Meta, ","))
	return nil
}

func adminEnrollTokenListSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin enroll-token list",
		short: "show enrollment tokens that can still enroll an agent",
		long: `Lists the enrollment tokens that can still enroll an agent, oldest first: ID,
vault, agent name, who created it and when it
expires (cluster time). --all lists every token the cluster remembers, with
its state: live, used (by which agent, with the certificate serial), expired or
revoked (by whom, why). Tokens themselves are never shown again; the ID is
what "coffer admin enroll-token revoke" takes. Admin certificate only.

With --json an array is printed; each element has id, state, vault, name,
created, expires, by and, as they apply, used_at, principal, serial,
revoked_at, revoked_by and revoke_reason.`,
		examples: []string{"coffer admin enroll-token list", "coffer admin enroll-token list --all --json"},
		new:      func() command { return &enrollTokenListCmd{} },
	}
}

// enrollTokenListCmd lists enrollment tokens.
type enrollTokenListCmd struct{ all bool }

func (c *enrollTokenListCmd) addFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.all, "all", false, "list used, expired and revoked tokens too")
}

// enrollTokenStateJSON is one element of `coffer admin enroll-token list --json`.
type enrollTokenStateJSON struct {
	State string `json:"state"`
	meta.EnrollToken
}

func (c *enrollTokenListCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminEnrollTokenListSpec(), "admin enroll-token list takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	ts, now, err := s.meta.ListEnrollTokens(ctx, c.all)
	if err != nil {
		return retentionErr(err, "list enrollment tokens")
	}
	if a.g.json {
		out := make([]enrollTokenStateJSON, 0, len(ts))
		for _, t := range ts {
			out = append(out, enrollTokenStateJSON{State: t.State(now), EnrollToken: t})
		}
		return writeJSON(a.stdout, out)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID	STATE	VAULT	AGENT	CREATED BY	EXPIRES	DETAIL")
	for _, t := range ts {
		agent, detail := t.Name, ""
		switch t.State(now) {
		case meta.TokenUsed:
			agent, detail = t.Principal, fmt.Sprintf("used %s, certificate serial %s", t.UsedAt.In(a.loc).Format("2006-01-02 15:04"), t.Serial)
		case meta.TokenRevoked:
			detail = fmt.Sprintf("revoked %s by %s", t.RevokedAt.In(a.loc).Format("2006-01-02 15:04"), t.RevokedBy)
			if t.RevokeReason != "" {
				detail += ": " + t.RevokeReason
			}
		}
		if agent == "" {
			agent = "(none: enrolls nobody)" // a token made before tokens fixed names
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.State(now), t.Vault, agent, t.By, t.Expires.In(a.loc).Format("2006-01-02 15:04:05"), detail)
	}
	tw.Flush()
	what := "live enrollment token"
	if c.all {
		what = "enrollment token"
	}
	fmt.Fprintf(a.stdout, "%d %s\n", len(ts), plural(len(ts), what, what+"s"))
	return nil
}

func adminEnrollTokenRevokeSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin enroll-token revoke",
		short: "withdraw an enrollment token before it is used",
		long: `Withdraws the live enrollment token with the given ID (as "coffer admin
enroll-token create" and "list" show it; a unique prefix of at least 8 hex
digits is enough), so that it can no longer enroll an agent: for a token that
leaked or is no longer needed. A token that was already used is refused: revoke
the certificate it produced with "coffer admin cert revoke --serial" instead.
Expired or already revoked tokens are refused too. Admin certificate only;
audited with --reason.

With --json the token's record is printed (as one element of "list --json").`,
		examples: []string{
			"coffer admin enroll-token revoke 89a4bdcf9004c6c5 --reason \"pasted in a ticket\"",
			"coffer admin enroll-token revoke 89a4bdcf",
		},
		new: func() command { return &enrollTokenRevokeCmd{} },
	}
}

// enrollTokenRevokeCmd withdraws an enrollment token.
type enrollTokenRevokeCmd struct{ reason string }

func (c *enrollTokenRevokeCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *enrollTokenRevokeCmd) run(ctx context.Context, a *app, args []string) error {
	spec := adminEnrollTokenRevokeSpec()
	if len(args) != 1 {
		return usagef(spec, "admin enroll-token revoke takes one token ID, got %d arguments", len(args))
	}
	id := strings.ToLower(strings.TrimSpace(args[0]))
	if err := meta.ValidateEnrollTokenID(id); err != nil {
		return usagef(spec, "%s", errorMessage(err))
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	t, err := s.meta.RevokeEnrollToken(ctx, id, c.reason)
	if err != nil {
		return retentionErr(err, "revoke the enrollment token")
	}
	if a.g.json {
		return writeJSON(a.stdout, enrollTokenStateJSON{State: meta.TokenRevoked, EnrollToken: t})
	}
	fmt.Fprintf(a.stdout, "revoked enrollment token %s of vault %q at %s; it can no longer enroll an agent\n", t.ID, t.Vault, t.RevokedAt.In(a.loc).Format(time.RFC3339))
	return nil
}

func agentEnrollSpec() *cmdSpec {
	return &cmdSpec{
		name:  "agent enroll",
		short: "turn an enrollment token into this host's backup-agent certificate",
		long: `Run on the protected host, with no certificate yet. Generates the agent's
private key here (it never leaves the host), sends a certificate request and
the token (--token, or --token-file FILE, "-" for stdin) to a meta server
(--meta, comma-separated host:port list) over the enrollment protocol, and
verifies the server against the cluster CA (--ca). The cluster consumes the
token and returns a backup-agent certificate for the token's vault only.

Writes into --out (default the working directory): ca.pem, agent.pem,
agent-key.pem (mode 0600) and coffer.yaml, so that
"coffer --config DIR/coffer.yaml backup PATH" works right away. An existing
agent-key.pem is never overwritten.

The agent's name (its certificate principal) is the one the token was made
for: the host cannot choose it. --name NAME makes the enrollment refuse a token
made for another name (a check against using another host's token). A used,
expired or unknown token, or one for another name than --name, is refused
(exit 1) and the attempt is audited.

With --json an object is printed: principal, vault, serial, config.`,
		examples: []string{
			"coffer agent enroll --token coffer-enroll-... --meta 10.0.0.1:7100,10.0.0.2:7100 --ca ca.pem --out /etc/coffer",
			"coffer agent enroll --token-file - --meta 10.0.0.1:7100 --ca ca.pem --name web01",
		},
		new: func() command { return &agentEnrollCmd{} },
	}
}

// agentEnrollCmd enrolls this host.
type agentEnrollCmd struct {
	token, tokenFile, metaAddrs, ca, name, out string
}

func (c *agentEnrollCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.token, "token", "", "the one-time enrollment `TOKEN`")
	fs.StringVar(&c.tokenFile, "token-file", "", "read the token from `FILE` (\"-\": stdin) instead of --token")
	fs.StringVar(&c.metaAddrs, "meta", "", "meta servers, `HOST:PORT[,...]`")
	fs.StringVar(&c.ca, "ca", "", "the cluster CA certificate `FILE` (PEM) the servers must present a certificate of")
	fs.StringVar(&c.name, "name", "", "refuse unless the token is for agent `NAME`")
	fs.StringVar(&c.out, "out", ".", "`DIR` to write the certificate, key and coffer.yaml into")
}

// agentEnrollJSON is `coffer agent enroll --json`.
type agentEnrollJSON struct {
	Principal string `json:"principal"`
	Vault     string `json:"vault"`
	Serial    string `json:"serial"`
	Config    string `json:"config"`
}

func (c *agentEnrollCmd) run(ctx context.Context, a *app, args []string) error {
	spec := agentEnrollSpec()
	if len(args) > 0 {
		return usagef(spec, "agent enroll takes no arguments, got %q", args[0])
	}
	token := c.token
	switch {
	case c.token != "" && c.tokenFile != "":
		return usagef(spec, "give --token or --token-file, not both")
	case c.tokenFile == "-":
		b, err := readAllLimited(a.stdin, 4096)
		if err != nil {
			return fmt.Errorf("read token from stdin: %w", err)
		}
		token = string(b)
	case c.tokenFile != "":
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return fmt.Errorf("read token: %w", err)
		}
		token = string(b)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return usagef(spec, "no token: pass --token TOKEN or --token-file FILE")
	}
	var metas []string
	for _, m := range strings.Split(c.metaAddrs, ",") {
		if m = strings.TrimSpace(m); m != "" {
			metas = append(metas, m)
		}
	}
	if len(metas) == 0 {
		return usagef(spec, "--meta is required: the meta servers' HOST:PORT list")
	}
	if c.ca == "" {
		return usagef(spec, "--ca is required: the cluster CA certificate file")
	}
	if c.name != "" {
		if err := meta.ValidateAgentName(c.name); err != nil {
			return usagef(spec, "--name: %v", err)
		}
	}
	caPEM, err := os.ReadFile(c.ca)
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	res, err := enroll.Enroll(ctx, enroll.Request{CA: caPEM, Meta: metas, Token: token, Name: c.name, Logger: a.logger()})
	if err != nil {
		switch {
		case errors.Is(err, meta.ErrDenied):
			return plainf(err, "enrollment refused: %s", errorMessage(err))
		case errors.Is(err, pki.ErrInvalid):
			return plainf(err, "--ca %s: %s", c.ca, errorMessage(err))
		}
		return err
	}
	cfgPath, err := enroll.Write(c.out, metas, res)
	if err != nil {
		return fmt.Errorf("enrolled as %s (serial %s) but cannot save the identity: %w", res.Principal, res.Serial, err)
	}
	if a.g.json {
		return writeJSON(a.stdout, agentEnrollJSON{Principal: res.Principal, Vault: string(res.Vault), Serial: res.Serial, Config: cfgPath})
	}
	fmt.Fprintf(a.stdout, "enrolled as backup agent %q of vault %q (certificate serial %s)\nconfiguration: %s\nback up with: coffer --config %s backup PATH\n",
		res.Principal, res.Vault, res.Serial, cfgPath, cfgPath)
	printHostKeyHint(a, cfgPath)
	return nil
}

func adminCertRevokeSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin cert revoke",
		short: "revoke a certificate by serial or all of a principal's certificates",
		long: `Records a revocation in the cluster. --serial HEX revokes one certificate (the
serial "coffer agent enroll" printed; colons and a 0x prefix are accepted);
--principal NAME revokes every certificate with that common name issued before
now (a certificate issued later under the same name is not affected). Every
node refuses the revoked certificate from its next refresh on (about one
second), on connections already open too; each refused request is audited.
Admin certificate only; audited with --reason.

With --json the revocation is printed: seq, serial or principal, at, by, reason.`,
		examples: []string{
			"coffer admin cert revoke --serial 5f1c0a93e2 --reason \"host decommissioned\"",
			"coffer admin cert revoke --principal web01 --reason \"key may have leaked\"",
		},
		new: func() command { return &certRevokeCmd{} },
	}
}

// certRevokeCmd revokes certificates.
type certRevokeCmd struct {
	principal, serial, reason string
}

func (c *certRevokeCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.principal, "principal", "", "revoke every certificate of principal `NAME`")
	fs.StringVar(&c.serial, "serial", "", "revoke the certificate with serial `HEX`")
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *certRevokeCmd) run(ctx context.Context, a *app, args []string) error {
	spec := adminCertRevokeSpec()
	if len(args) > 0 {
		return usagef(spec, "admin cert revoke takes no arguments, got %q", args[0])
	}
	if (c.principal == "") == (c.serial == "") {
		return usagef(spec, "give exactly one of --principal NAME and --serial HEX")
	}
	r := meta.Revocation{Principal: c.principal, Reason: c.reason}
	if c.serial != "" {
		s, err := pki.ParseSerial(c.serial)
		if err != nil {
			return usagef(spec, "--serial: %v", err)
		}
		r.Serial = s
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	rv, err := s.meta.RevokeCert(ctx, r)
	if err != nil {
		return retentionErr(err, "revoke")
	}
	if a.g.json {
		return writeJSON(a.stdout, rv)
	}
	fmt.Fprintf(a.stdout, "revoked %s at %s (revocation %d); nodes refuse it from their next refresh\n", revocationTarget(rv), rv.At.In(a.loc).Format(time.RFC3339), rv.Seq)
	return nil
}

func revocationTarget(r meta.Revocation) string {
	if r.Serial != "" {
		return "certificate serial " + r.Serial
	}
	return fmt.Sprintf("certificates of principal %q", r.Principal)
}

func adminCertListSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin cert list",
		short: "show issued certificates with their lifetimes, and revocations",
		long: `Lists the certificates the meta servers' issuers signed (enrollments, node
joins, "admin cert issue", renewals), oldest first: serial, principal, role,
not-before and not-after, state (valid; expiring: within 30 days; expired;
revoked), the meta server whose issuer signed it and how it came to be. Then
every revocation recorded in the cluster, oldest first: sequence number,
cluster time, the revoked serial or principal, who revoked it and why.
Certificates signed by the root on the CA host (the first meta server, the
first admin) are not in the list. Admin certificate only.

With --json an object is printed: certificates (each with serial, principal,
role, vaults, not_before, not_after, issuer, how, by, renews, at, state) and
revocations (each with seq, serial or principal, at, by and reason).`,
		examples: []string{"coffer admin cert list", "coffer admin cert list --json"},
		new:      func() command { return &certListCmd{} },
	}
}

// certListCmd lists issued certificates and revocations.
type certListCmd struct{}

func (c *certListCmd) addFlags(*flag.FlagSet) {}

func (c *certListCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminCertListSpec(), "admin cert list takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	certs, revs, now, err := s.meta.ListCerts(ctx)
	if err != nil {
		return retentionErr(err, "list certificates")
	}
	return printCertList(a, certs, revs, now)
}

// readAllLimited reads r to the end, failing when it holds more than limit bytes.
func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("more than %d bytes", limit)
	}
	return b, nil
}
