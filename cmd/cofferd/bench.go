package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer/bench/nodebench"
)

// cmdBenchStages runs the node-side stage micro-benchmarks (segment append with group
// fsync, Pebble index batches) for `coffer bench`, which keeps the agent binary free of
// Pebble by running them here.
func cmdBenchStages(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cofferd bench-stages", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the stages as a JSON array")
	quick := fs.Bool("quick", false, "measure each stage for 0.3 s instead of 1.5 s")
	dir := fs.String("dir", "", "scratch `directory` on the disk to measure (default: a temporary directory; removed afterwards)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "cofferd bench-stages: no arguments are taken")
		return 2
	}
	d := 1500 * time.Millisecond
	if *quick {
		d = 300 * time.Millisecond
	}
	scratch := *dir
	if scratch == "" {
		tmp, err := os.MkdirTemp("", "cofferd-bench-")
		if err != nil {
			fmt.Fprintln(stderr, "cofferd:", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		scratch = filepath.Join(tmp, "stages")
	}
	st, err := nodebench.Run(ctx, scratch, d)
	if err != nil {
		fmt.Fprintln(stderr, "cofferd:", err)
		return 1
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(st); err != nil {
			fmt.Fprintln(stderr, "cofferd:", err)
			return 1
		}
		return 0
	}
	for _, s := range st {
		fmt.Fprintf(stdout, "%-45s %8.1f MB/s  %s\n", s.Name, s.MBps1, s.Note)
	}
	return 0
}
