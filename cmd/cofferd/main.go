// Command cofferd runs Coffer cluster nodes.
//
//	cofferd run --config FILE [--log-format text|json]
//	                                     run one node from its config file
//	cofferd ca init|request|sign         the root CA and key requests (production bootstrap)
//	cofferd bootstrap --id ID ...        configure the first meta server
//	cofferd join --token T ...           join a host to a running cluster
//	cofferd renew --config FILE          renew this node's certificate
//	cofferd dev --dir D [--meta 3 --chunk 6] [--init-only] [--metrics-port N]
//	                                     run a whole dev cluster in this process
//	cofferd bench-stages [--json] [--quick] [--dir D]
//	                                     node-side stage micro-benchmarks
//	cofferd version
//
// Exit codes: 0 success, 1 failure, 2 usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/bench/profenv"
	"github.com/cofferhq/coffer/node"
)

// version is the release version; set with -ldflags "-X main.version=..." at build time.
const version = "0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := profenv.Start(os.Getenv, os.Stderr, "cofferd")
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

const usage = `cofferd runs Coffer cluster nodes.

Usage:
  cofferd run --config FILE      run one node from its YAML config
  cofferd ca init|request|sign   the cluster root CA (CA host) and node key requests
  cofferd bootstrap [flags]      configure the first meta server from its signed certificates
  cofferd join [flags]           join this host to a running cluster with a node join token
  cofferd renew --config FILE    renew this node's certificate (new key, same identity)
  cofferd dev --dir DIR [flags]  run a whole cluster in this process (initialises DIR if empty)
  cofferd bench-stages [flags]   node-side stage micro-benchmarks (used by coffer bench)
  cofferd version

Run 'cofferd COMMAND --help' for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stdout, stderr)
	case "dev":
		return cmdDev(ctx, args[1:], stdout, stderr)
	case "ca":
		return cmdCA(args[1:], stdout, stderr)
	case "bootstrap":
		return cmdBootstrap(args[1:], stdout, stderr)
	case "join":
		return cmdJoin(ctx, args[1:], stdout, stderr)
	case "renew":
		return cmdRenew(ctx, args[1:], stdout, stderr)
	case "bench-stages":
		return cmdBenchStages(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "cofferd", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "cofferd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cofferd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", os.Getenv("COFFER_NODE_CONFIG"), "node config `file` (env COFFER_NODE_CONFIG)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", logText, "log format: text (key=value) or json (one object per line)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "cofferd run: --config FILE is required and no arguments are taken")
		return 2
	}
	logger, err := newLogger(stderr, *level, *format)
	if err != nil {
		fmt.Fprintln(stderr, "cofferd run:", err)
		return 2
	}
	// Libraries that write through the standard log package (quic-go) go through it too,
	// so that every line on stderr has the chosen format.
	slog.SetDefault(logger)
	cfg, err := node.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	n, err := node.New(cfg, node.Deps{Logger: logger, Now: time.Now})
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "cofferd: node %s listening on %s\n", n.ID(), n.Addr())
	if a := n.MetricsAddr(); a != "" {
		fmt.Fprintf(stdout, "cofferd: metrics on http://%s/metrics\n", a)
	}
	if err := n.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	return 0
}

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cofferd dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "cluster `directory` (created and initialised when empty)")
	metaN := fs.Int("meta", 3, "meta nodes (at init)")
	chunkN := fs.Int("chunk", 6, "chunk nodes (at init)")
	initOnly := fs.Bool("init-only", false, "write CA, certificates and configs, then exit")
	level := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	format := fs.String("log-format", logText, "log format: text (key=value) or json (one object per line)")
	metricsPort := fs.Int("metrics-port", 0, "at init: serve the nodes' metrics on consecutive ports from `N` (default: free ports)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "cofferd dev: --dir DIR is required and no arguments are taken")
		return 2
	}
	logger, err := newLogger(stderr, *level, *format)
	if err != nil {
		fmt.Fprintln(stderr, "cofferd dev:", err)
		return 2
	}
	// Libraries that write through the standard log package (quic-go) go through it too,
	// so that every line on stderr has the chosen format.
	slog.SetDefault(logger)
	err = node.DevInit(node.DevOptions{Dir: *dir, Meta: *metaN, Chunk: *chunkN, MetricsPort: *metricsPort}, time.Now())
	switch {
	case errors.Is(err, node.ErrDevExists):
		if *initOnly {
			fmt.Fprintln(stderr, "cofferd:", err)
			return 1
		}
	case err != nil:
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	default:
		fmt.Fprintf(stdout, "cofferd: initialised %d meta + %d chunk nodes in %s\n", *metaN, *chunkN, *dir)
	}
	if *initOnly {
		fmt.Fprintf(stdout, "node configs: %s/nodes/*/node.yaml (run each with: cofferd run --config FILE)\nclient config: %s\n",
			*dir, node.DevClientConfig(*dir))
		return 0
	}
	d, err := node.StartDev(*dir, node.Deps{Logger: logger, Now: time.Now})
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = d.WaitReady(rctx)
	cancel()
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		d.Close()
		return 1
	}
	var ids []string
	for _, n := range d.Nodes {
		ids = append(ids, n.ID()+"="+n.Addr())
	}
	fmt.Fprintf(stdout, "cofferd: dev cluster ready: %s\nclient config: %s  (export COFFER_CONFIG=%s)\n",
		strings.Join(ids, " "), node.DevClientConfig(*dir), node.DevClientConfig(*dir))
	var metrics []string
	for _, n := range d.Nodes {
		if a := n.MetricsAddr(); a != "" {
			metrics = append(metrics, a)
		}
	}
	if len(metrics) > 0 {
		fmt.Fprintf(stdout, "metrics (Prometheus targets, /metrics): %s\n", strings.Join(metrics, " "))
	}
	if u := d.StatusURL(); u != "" {
		fmt.Fprintf(stdout, "status page: %s\n", u)
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "cofferd: stopping")
	if err := d.Close(); err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	return 0
}
