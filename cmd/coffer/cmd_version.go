package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is the coffer release version (matching cofferd's).
const version = "0.1.0-dev"

func versionSpec() *cmdSpec {
	return &cmdSpec{
		name:     "version",
		short:    "print the version",
		long:     `Prints the release version, the source revision when known, the Go version and the platform.`,
		examples: []string{"coffer version"},
		new:      func() command { return &versionCmd{} },
	}
}

// versionCmd prints version information.
type versionCmd struct{}

func (c *versionCmd) addFlags(*flag.FlagSet) {}

func (c *versionCmd) run(_ context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(versionSpec(), "version takes no arguments, got %q", args[0])
	}
	v := versionInfo{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if a.g.json {
		return writeJSON(a.stdout, v)
	}
	rev := ""
	if v.Revision != "" {
		rev = " " + shortHex(v.Revision)
		if v.Modified {
			rev += "+dirty"
		}
	}
	fmt.Fprintf(a.stdout, "coffer %s%s (%s, %s)\n", v.Version, rev, v.Go, v.Platform)
	return nil
}

// versionInfo is `coffer version --json`.
type versionInfo struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}
