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

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
)

// Production bootstrap commands of the coffer CLI (issue 13): node join tokens,
// certificates from CSRs, key requests and renewals.

func adminNodeTokenCreateSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin node-token create",
		short: "create a one-time token that joins a meta or chunk node",
		long: `Creates a one-time node join token and prints it. On the new host,
"cofferd join --token TOKEN --meta HOST:PORT --ca ca.pem --id ID --listen ADDR
--data DIR" generates the node's key there, obtains its certificate and the
cluster secret with the token, and writes its node.yaml. The token fixes the
role (--role meta or chunk: a chunk token never yields a meta certificate), the
node ID (--id) and its failure domain (--domain, default the ID). The token is
valid for --ttl of cluster time (default 24h, at most 30d) and for one join.
An ID that is already a node of the map, a meta server, or bound to another
live token is refused.

Tokens are listed and revoked with "coffer admin enroll-token list" and
"coffer admin enroll-token revoke" (kind node). The cluster keeps only the
token's SHA-256; the token is shown once, here. Admin certificate only; audited.

With --json an object is printed: token, id, role, node, domain, expires.`,
		examples: []string{
			"coffer admin node-token create --role chunk --id chunk-7 --domain rack-b",
			"coffer admin node-token create --role meta --id meta-4 --ttl 2h --json",
		},
		new: func() command { return &nodeTokenCmd{} },
	}
}

// nodeTokenCmd creates a node join token.
type nodeTokenCmd struct {
	role, id, domain, ttl string
}

func (c *nodeTokenCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.role, "role", "", "the node's `ROLE`: meta or chunk (required)")
	fs.StringVar(&c.id, "id", "", "the node `ID` (required; its certificate's name)")
	fs.StringVar(&c.domain, "domain", "", "the node's failure `DOMAIN` (default: its ID)")
	fs.StringVar(&c.ttl, "ttl", "24h", "how long the token is valid (`DURATION`: 30m, 24h, 7d; at most 30d)")
}

// nodeTokenJSON is `coffer admin node-token create --json`.
type nodeTokenJSON struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Role    string    `json:"role"`
	Node    string    `json:"node"`
	Domain  string    `json:"domain,omitempty"`
	Expires time.Time `json:"expires"`
}

func (c *nodeTokenCmd) run(ctx context.Context, a *app, args []string) error {
	spec := adminNodeTokenCreateSpec()
	if len(args) > 0 {
		return usagef(spec, "admin node-token create takes no arguments, got %q", args[0])
	}
	if c.role == "" || c.id == "" {
		return usagef(spec, "--role (meta or chunk) and --id are required: the token fixes both")
	}
	if err := meta.ValidateNodeToken(c.role, c.id, c.domain); err != nil {
		return usagef(spec, "%v", err)
	}
	ttl, err := parseLongDuration(c.ttl)
	if err != nil || ttl <= 0 || ttl > meta.MaxEnrollTTL {
		return usagef(spec, "--ttl %q: want a duration in (0, 30d]", c.ttl)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	tok, rec, err := s.meta.CreateNodeToken(ctx, c.role, c.id, c.domain, ttl)
	if err != nil {
		return retentionErr(err, "create a node join token")
	}
	if a.g.json {
		return writeJSON(a.stdout, nodeTokenJSON{Token: tok, ID: rec.ID, Role: rec.Role, Node: rec.Name, Domain: rec.Domain, Expires: rec.Expires})
	}
	fmt.Fprintf(a.stdout, "%s\n", tok)
	fmt.Fprintf(a.stderr, "one-time join token %s for %s node %s (domain %q), valid until %s (cluster time)\non the host: cofferd join --token TOKEN --meta %s --ca ca.pem --id %s --listen ADDR --data DIR\n",
		rec.ID, rec.Role, rec.Name, rec.Domain, rec.Expires.In(a.loc).Format(time.RFC3339), strings.Join(s.cfg.Meta, ","), rec.Name)
	return nil
}

func adminCertIssueSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin cert issue",
		short: "issue an admin, restore-operator or replication certificate from a CSR",
		long: `Signs a certificate for the key of a certificate signing request (--csr
FILE, PEM), so that the private key never leaves its owner (make a key and CSR
with "coffer cert request"). --role is admin, restore-operator or
replication, --principal the certificate's name; the CSR must have been made
for that name (a request for another name is refused). A restore operator may
be limited to vaults (--vaults a,b). A replication certificate (for "coffer
admin replicate add" on another cluster) must name the vaults it may read
(--vaults): it reads their sealed chunks, snapshots, locks, holds and key
wraps, and nothing else. A meta server's issuing CA signs; the result is the
certificate followed by the issuer's, written to --out (default stdout).
Admin certificate only; audited.

With --json an object is printed: serial, principal, role, vaults, not_before,
not_after, issuer, cert (PEM).`,
		examples: []string{
			"coffer admin cert issue --role admin --principal bob --csr bob.csr --out bob.pem",
			"coffer admin cert issue --role restore-operator --principal dr --csr dr.csr --vaults web01,db",
			"coffer admin cert issue --role replication --principal site-b --csr site-b.csr --vaults web01 --out site-b.pem",
		},
		new: func() command { return &certIssueCmd{} },
	}
}

// certIssueCmd issues a certificate from a CSR.
type certIssueCmd struct {
	role, principal, csr, vaults, validity, out string
}

func (c *certIssueCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.role, "role", "", "`ROLE`: admin, restore-operator or replication (required)")
	fs.StringVar(&c.principal, "principal", "", "the certificate's `NAME` (required; the CSR's name)")
	fs.StringVar(&c.csr, "csr", "", "the certificate request `FILE` (PEM; required)")
	fs.StringVar(&c.vaults, "vaults", "", "comma-separated `VAULTS`: a restore operator's (default every vault), a replication job's (required)")
	fs.StringVar(&c.validity, "validity", "1y", "certificate lifetime (`DURATION`: 90d, 1y)")
	fs.StringVar(&c.out, "out", "", "write the certificate to `FILE` (default stdout)")
}

// certJSON describes an issued certificate (admin cert issue, agent renew --json).
type certJSON struct {
	Serial    string    `json:"serial"`
	Principal string    `json:"principal"`
	Role      string    `json:"role"`
	Vaults    []string  `json:"vaults,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Issuer    string    `json:"issuer"`
	Cert      string    `json:"cert,omitempty"`
}

func (c *certIssueCmd) run(ctx context.Context, a *app, args []string) error {
	spec := adminCertIssueSpec()
	if len(args) > 0 {
		return usagef(spec, "admin cert issue takes no arguments, got %q", args[0])
	}
	if c.role != meta.CertRoleAdmin && c.role != meta.CertRoleRestore && c.role != meta.CertRoleReplication {
		return usagef(spec, "--role %q: want admin, restore-operator or replication (nodes join with a node token, agents enroll)", c.role)
	}
	if err := meta.ValidateAgentName(c.principal); err != nil {
		return usagef(spec, "--principal: %v", err)
	}
	if c.csr == "" {
		return usagef(spec, "--csr FILE is required (make one with coffer cert request)")
	}
	validity, err := parseLongDuration(c.validity)
	if err != nil || validity <= 0 {
		return usagef(spec, "--validity %q: want a positive duration", c.validity)
	}
	vaults := splitComma(c.vaults)
	if len(vaults) > 0 && c.role == meta.CertRoleAdmin {
		return usagef(spec, "--vaults is for restore-operator and replication certificates")
	}
	if len(vaults) == 0 && c.role == meta.CertRoleReplication {
		return usagef(spec, "--vaults is required for a replication certificate (the vaults it replicates)")
	}
	b, err := os.ReadFile(c.csr)
	if err != nil {
		return fmt.Errorf("read CSR: %w", err)
	}
	der, err := pki.CSRFromPEM(b)
	if err != nil {
		return plainf(err, "--csr %s: %s", c.csr, errorMessage(err))
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	res, err := s.meta.IssueCert(ctx, meta.IssueCertRequest{Role: c.role, Principal: c.principal, CSR: der, Vaults: vaults, Validity: int64(validity)})
	if err != nil {
		return retentionErr(err, "issue a certificate")
	}
	r := res.Record
	if c.out != "" {
		if err := pki.WriteFile(c.out, res.Cert, 0o644); err != nil {
			return err
		}
	}
	if a.g.json {
		return writeJSON(a.stdout, certJSON{Serial: r.Serial, Principal: r.Principal, Role: r.Role, Vaults: r.Vaults,
			NotBefore: r.NotBefore, NotAfter: r.NotAfter, Issuer: r.Issuer, Cert: string(res.Cert)})
	}
	if c.out == "" {
		a.stdout.Write(res.Cert)
	}
	fmt.Fprintf(a.stderr, "issued %s certificate for %q: serial %s, valid until %s, signed by %s\n",
		r.Role, r.Principal, r.Serial, r.NotAfter.In(a.loc).Format(time.RFC3339), r.Issuer)
	return nil
}

// splitComma splits a comma-separated list, dropping empty items.
func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func certRequestSpec() *cmdSpec {
	return &cmdSpec{
		name:  "cert request",
		short: "make a private key and a certificate signing request",
		long: `Generates an ECDSA P-256 private key in --key (mode 0600; an existing file
is never overwritten) and a certificate signing request for --principal in
--csr. Send only the CSR to whoever signs it: "coffer admin cert issue" (an
admin of a running cluster) or "cofferd ca sign" on the CA host (the first
admin). Needs no cluster and no configuration.

With --json an object is printed: principal, key, csr.`,
		examples: []string{"coffer cert request --principal alice --key alice-key.pem --csr alice.csr"},
		new:      func() command { return &certRequestCmd{} },
	}
}

// certRequestCmd makes a key and a CSR.
type certRequestCmd struct{ principal, key, csr string }

func (c *certRequestCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.principal, "principal", "", "the `NAME` the certificate will carry (required)")
	fs.StringVar(&c.key, "key", "", "private key `FILE` to create (required)")
	fs.StringVar(&c.csr, "csr", "", "certificate request `FILE` to write (required)")
}

func (c *certRequestCmd) run(ctx context.Context, a *app, args []string) error {
	spec := certRequestSpec()
	if len(args) > 0 {
		return usagef(spec, "cert request takes no arguments, got %q", args[0])
	}
	if c.key == "" || c.csr == "" {
		return usagef(spec, "--key FILE and --csr FILE are required")
	}
	if err := meta.ValidateAgentName(c.principal); err != nil {
		return usagef(spec, "--principal: %v", err)
	}
	if _, err := os.Stat(c.key); !errors.Is(err, os.ErrNotExist) {
		return plainf(os.ErrExist, "%s exists: a key is never overwritten", c.key)
	}
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, c.principal)
	if err != nil {
		return err
	}
	if err := pki.WriteFile(c.key, keyPEM, 0o600); err != nil {
		return err
	}
	if err := pki.WriteFile(c.csr, csr, 0o644); err != nil {
		return err
	}
	if a.g.json {
		return writeJSON(a.stdout, map[string]string{"principal": c.principal, "key": c.key, "csr": c.csr})
	}
	fmt.Fprintf(a.stdout, "key %s (keep it here), request %s for %q (send it to be signed)\n", c.key, c.csr, c.principal)
	return nil
}

func agentRenewSpec() *cmdSpec {
	return &cmdSpec{
		name:  "agent renew",
		short: "renew this client's certificate before it expires (new key, same identity)",
		long: `Generates a new private key here and asks a meta server, authenticated by
the current certificate of the configuration (--config / COFFER_CONFIG), for a
certificate with the same identity (principal, role, vault scope) for it. A
revoked or expired certificate is refused: enroll again. The configuration's
certificate and key files are replaced; the old ones are kept with the suffix
.old. Works for agent, restore-operator and admin certificates.

With --json an object is printed: serial, principal, role, vaults, not_before,
not_after, issuer.`,
		examples: []string{"coffer agent renew", "coffer --config /etc/coffer/coffer.yaml agent renew --json"},
		new:      func() command { return &agentRenewCmd{} },
	}
}

// agentRenewCmd renews the client's certificate.
type agentRenewCmd struct{}

func (c *agentRenewCmd) addFlags(*flag.FlagSet) {}

func (c *agentRenewCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(agentRenewSpec(), "agent renew takes no arguments, got %q", args[0])
	}
	cfg, err := a.loadConfig()
	if err != nil {
		return err
	}
	id, err := pki.LoadIdentity(cfg.CA, cfg.Cert, cfg.Key)
	if err != nil {
		return fmt.Errorf("load identity: %w", err)
	}
	if now := a.now(); !now.Before(id.Leaf().NotAfter) {
		return plainf(meta.ErrDenied, "the certificate %s expired at %s: it cannot renew itself; enroll again", cfg.Cert, id.Leaf().NotAfter.Format(time.RFC3339))
	}
	ep, err := cquic.New(cquic.Config{Identity: id, Logger: a.logger()})
	if err != nil {
		return fmt.Errorf("open endpoint: %w", err)
	}
	defer ep.Close()
	caPEM, err := os.ReadFile(cfg.CA)
	if err != nil {
		return err
	}
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return err
	}
	csrPEM, err := pki.NewCSR(key, id.Principal())
	if err != nil {
		return err
	}
	der, err := pki.CSRFromPEM(csrPEM)
	if err != nil {
		return err
	}
	res, err := metarpc.NewClient(ep, cfg.Meta).RenewCert(ctx, meta.RenewRequest{CSR: der})
	if err != nil {
		return retentionErr(err, "renew the certificate")
	}
	info, err := pki.InstallRenewed(caPEM, res.Cert, keyPEM, id, cfg.Cert, cfg.Key)
	if err != nil {
		return err
	}
	r := res.Record
	if a.g.json {
		return writeJSON(a.stdout, certJSON{Serial: info.Serial, Principal: info.Principal, Role: info.Role, Vaults: r.Vaults,
			NotBefore: info.NotBefore, NotAfter: info.NotAfter, Issuer: r.Issuer})
	}
	fmt.Fprintf(a.stdout, "renewed %s certificate of %q: serial %s, valid until %s (old files kept as %s.old, %s.old)\n",
		info.Role, info.Principal, info.Serial, info.NotAfter.In(a.loc).Format(time.RFC3339), cfg.Cert, cfg.Key)
	return nil
}

// certListEntryJSON is one issued certificate of `coffer admin cert list --json`.
type certListEntryJSON struct {
	meta.IssuedCert
	State string `json:"state"`
}

// certListJSON is `coffer admin cert list --json`.
type certListJSON struct {
	Certificates []certListEntryJSON `json:"certificates"`
	Revocations  []meta.Revocation   `json:"revocations"`
}

// printCertList prints the issued certificates and the revocations.
func printCertList(a *app, certs []meta.IssuedCert, revs []meta.Revocation, now time.Time) error {
	if revs == nil {
		revs = []meta.Revocation{}
	}
	if a.g.json {
		out := certListJSON{Certificates: []certListEntryJSON{}, Revocations: revs}
		for _, c := range certs {
			out.Certificates = append(out.Certificates, certListEntryJSON{IssuedCert: c, State: c.State(now, revs)})
		}
		return writeJSON(a.stdout, out)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERIAL\tPRINCIPAL\tROLE\tNOT BEFORE\tNOT AFTER\tSTATE\tISSUER\tHOW")
	for _, c := range certs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Serial, c.Principal, c.Role,
			c.NotBefore.In(a.loc).Format("2006-01-02 15:04"), c.NotAfter.In(a.loc).Format("2006-01-02 15:04"),
			c.State(now, revs), c.Issuer, c.How)
	}
	tw.Flush()
	fmt.Fprintf(a.stdout, "%d issued %s\n\n", len(certs), plural(len(certs), "certificate", "certificates"))
	tw = tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tREVOKED\tBY\tREASON")
	for _, r := range revs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.Seq, r.At.In(a.loc).Format("2006-01-02 15:04:05"), revocationTarget(r), r.By, r.Reason)
	}
	tw.Flush()
	fmt.Fprintf(a.stdout, "%d %s\n", len(revs), plural(len(revs), "revocation", "revocations"))
	return nil
}

// certWarnings names the certificates that expire within meta.CertExpiryWarning of now:
// each reachable node's own, and every issued certificate that is neither revoked,
// expired nor already renewed. The issued ones need an admin certificate; without one
// (or when the list cannot be read) only the nodes' are checked.
func certWarnings(ctx context.Context, s *session, nodes []nodeRow, now time.Time) []string {
	var out []string
	for _, n := range nodes {
		if !n.CertNotAfter.IsZero() && n.CertNotAfter.Sub(now) < meta.CertExpiryWarning {
			out = append(out, fmt.Sprintf("node %s: its certificate expires %s (%s); renew it: cofferd renew --config node.yaml, then restart the node",
				n.ID, n.CertNotAfter.UTC().Format(time.RFC3339), untilText(n.CertNotAfter.Sub(now))))
		}
	}
	certs, revs, cnow, err := s.meta.ListCerts(ctx)
	if err != nil {
		return out
	}
	renewed := map[string]bool{}
	for _, c := range certs {
		if c.Renews != "" {
			renewed[c.Renews] = true
		}
	}
	for _, c := range certs {
		if renewed[c.Serial] || c.State(cnow, revs) != meta.CertExpiring {
			continue
		}
		out = append(out, fmt.Sprintf("%s %s: certificate serial %s expires %s (%s); renew it (coffer agent renew / cofferd renew)",
			c.Role, c.Principal, c.Serial, c.NotAfter.UTC().Format(time.RFC3339), untilText(c.NotAfter.Sub(cnow))))
	}
	return out
}

// untilText renders a remaining lifetime: "in 12 days", "expired".
func untilText(d time.Duration) string {
	if d <= 0 {
		return "expired"
	}
	if days := int(d / (24 * time.Hour)); days >= 1 {
		return fmt.Sprintf("in %d %s", days, plural(days, "day", "days"))
	}
	return fmt.Sprintf("in %s", d.Round(time.Minute))
}

// printCertWarnings writes the certificate expiry warnings of admin status.
func printCertWarnings(w io.Writer, warnings []string) {
	if len(warnings) == 0 {
		return
	}
	fmt.Fprintln(w, "\nCertificates:")
	for _, m := range warnings {
		fmt.Fprintf(w, "  WARNING: %s\n", m)
	}
}
