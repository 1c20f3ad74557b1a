package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/placement"
)

// Production bootstrap commands (issue 13): ca init|request|sign, bootstrap, join, renew.
// Every key is made on the host that uses it; see docs/security.md, "Credentials".

const caUsage = `cofferd ca manages the cluster root CA (run on the CA host) and node key requests.

Usage:
  cofferd ca init --out DIR                         create the root CA (DIR/ca.pem, DIR/ca-key.pem)
  cofferd ca request --id ID --data DIR [--issuer]  make a node key and node.csr (+ issuer key, issuer.csr)
  cofferd ca sign --ca-dir DIR --csr FILE --role ROLE --id ID --out FILE
                                                    sign a request with the root (CA host)
`

func cmdCA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, caUsage)
		return 2
	}
	switch args[0] {
	case "init":
		return cmdCAInit(args[1:], stdout, stderr)
	case "request":
		return cmdCARequest(args[1:], stdout, stderr)
	case "sign":
		return cmdCASign(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, caUsage)
		return 0
	}
	fmt.Fprintf(stderr, "cofferd ca: unknown command %q\n\n%s", args[0], caUsage)
	return 2
}

func cmdCAInit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cofferd ca init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "`directory` for ca.pem and ca-key.pem (created 0700)")
	name := fs.String("name", "coffer cluster root", "the root's common `name`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "cofferd ca init: --out DIR is required and no arguments are taken")
		return 2
	}
	if err := node.CAInit(*out, *name, time.Now()); err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "cofferd: root CA in %s: %s (give it to every host) and %s (never leaves this host)\n",
		*out, node.CACertFile, node.CAKeyFile)
	return 0
}

func cmdCARequest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cofferd ca request", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "", "the node `ID` (the certificate's name)")
	data := fs.String("data", "", "the node's data `directory` (the keys are written here)")
	issuer := fs.Bool("issuer", false, "also make the meta server's issuing CA key and issuer.csr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *id == "" || *data == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "cofferd ca request: --id ID and --data DIR are required and no arguments are taken")
		return 2
	}
	if err := node.CARequest(*data, *id, *issuer); err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "cofferd: keys and requests in %s; sign on the CA host:\n  cofferd ca sign --ca-dir CADIR --csr %s --role meta --id %s --out %s\n",
		*data, node.NodeCSRFile, *id, node.NodeCertFile)
	if *issuer {
		fmt.Fprintf(stdout, "  cofferd ca sign --ca-dir CADIR --csr %s --role issuer --id %s --out %s\n", node.IssuerCSRFile, *id, node.IssuerCertFile)
	}
	return 0
}

// listFlag is a comma-separated list flag.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func cmdCASign(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cofferd ca sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	caDir := fs.String("ca-dir", "", "the root CA `directory` (cofferd ca init --out)")
	csr := fs.String("csr", "", "the certificate request `file` (PEM)")
	role := fs.String("role", "", "meta, chunk, admin, restore-operator, replication or issuer")
	id := fs.String("id", "", "the principal `NAME` (node ID, admin name; for issuer the meta server's ID)")
	out := fs.String("out", "", "the certificate `file` to write")
	vaults := fs.String("vaults", "", "restore-operator: comma-separated `VAULTS` it may restore (default all); replication: the vaults it reads (required)")
	validity := fs.Duration("validity", 0, "certificate lifetime (`DURATION`; default 1 year, issuers 5 years)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *caDir == "" || *csr == "" || *role == "" || *id == "" || *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "cofferd ca sign: --ca-dir, --csr, --role, --id and --out are required and no arguments are taken")
		return 2
	}
	req, err := os.ReadFile(*csr)
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	cert, err := node.CASign(node.SignOptions{CADir: *caDir, CSR: req, Role: *role, ID: *id, Vaults: splitList(*vaults), Validity: *validity}, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	if err := os.WriteFile(*out, cert, 0o644); err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "cofferd: signed %s certificate for %s: %s\n", *role, *id, *out)
	return 0
}

func cmdBootstrap(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cofferd bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o node.BootstrapOptions
	fs.StringVar(&o.ID, "id", "", "the first meta server's `ID`")
	fs.StringVar(&o.DataDir, "data", "", "its data `directory` (holds the keys and signed certificates)")
	caFile := fs.String("ca", "", "the root certificate `file` (ca.pem from the CA host)")
	fs.StringVar(&o.Listen, "listen", "", "QUIC `address` host:port (RPC and Raft)")
	fs.StringVar(&o.Gossip, "gossip", "", "gossip `address` host:port (default: listen host, port + 1)")
	fs.StringVar(&o.Domain, "domain", "", "failure `domain` (default: the ID)")
	pgs := fs.Uint("pg-count", 256, "placement groups (a power of two; fixed for the cluster's life)")
	profile := fs.String("profile", "4+2", "erasure `K+M` of the cluster")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.ID == "" || o.DataDir == "" || *caFile == "" || o.Listen == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "cofferd bootstrap: --id, --data, --ca and --listen are required and no arguments are taken")
		return 2
	}
	var k, m int
	if _, err := fmt.Sscanf(*profile, "%d+%d", &k, &m); err != nil || k < 1 || m < 0 {
		fmt.Fprintf(stderr, "cofferd bootstrap: --profile %q: want K+M, like 4+2\n", *profile)
		return 2
	}
	o.Profile = placement.Profile{K: k, M: m}
	o.PGCount = uint32(*pgs)
	ca, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	o.CA = ca
	path, err := node.Bootstrap(o)
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "cofferd: first meta server %s configured: %s\nrun it: cofferd run --config %s\n", o.ID, path, path)
	return 0
}

func cmdJoin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cofferd join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o node.JoinOptions
	fs.StringVar(&o.Token, "token", os.Getenv("COFFER_JOIN_TOKEN"), "the one-time node join `TOKEN` (env COFFER_JOIN_TOKEN)")
	metaAddrs := fs.String("meta", "", "meta server `HOST:PORT` (comma-separated for several)")
	caFile := fs.String("ca", "", "the root certificate `file` (ca.pem)")
	fs.StringVar(&o.ID, "id", "", "this node's `ID` (must be the one the token names)")
	fs.StringVar(&o.Listen, "listen", "", "QUIC `address` host:port this node will listen on")
	fs.StringVar(&o.Gossip, "gossip", "", "gossip `address` host:port (default: listen host, port + 1)")
	fs.StringVar(&o.DataDir, "data", "", "the node's data `directory`")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Meta = splitList(*metaAddrs)
	if o.Token == "" || len(o.Meta) == 0 || *caFile == "" || o.ID == "" || o.Listen == "" || o.DataDir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "cofferd join: --token, --meta, --ca, --id, --listen and --data are required and no arguments are taken")
		return 2
	}
	ca, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	o.CA = ca
	jctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	path, res, err := node.Join(jctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "cofferd: joined as %s node %s (certificate serial %s, domain %s): %s\nrun it: cofferd run --config %s\n",
		res.Role, res.ID, res.Serial, res.Domain, path, path)
	if res.Role == "meta" {
		fmt.Fprintf(stdout, "then: coffer admin meta add %s; to let it sign, on the CA host: cofferd ca sign --ca-dir CADIR --csr %s --role issuer --id %s --out %s (copy it into %s, restart)\n",
			res.ID, node.IssuerCSRFile, res.ID, node.IssuerCertFile, o.DataDir)
	} else {
		fmt.Fprintf(stdout, "then: coffer admin node add %s\n", res.ID)
	}
	return 0
}

func cmdRenew(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cofferd renew", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", os.Getenv("COFFER_NODE_CONFIG"), "node config `file` (env COFFER_NODE_CONFIG)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "cofferd renew: --config FILE is required and no arguments are taken")
		return 2
	}
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	info, err := node.Renew(rctx, *cfgPath, nil)
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "cofferd: renewed %s certificate of %s: serial %s, valid until %s; restart the node to use it\n",
		info.Role, info.Principal, info.Serial, info.NotAfter.Format(time.RFC3339))
	return 0
}
