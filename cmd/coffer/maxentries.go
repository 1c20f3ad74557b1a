package main

import (
	"flag"

	"github.com/cofferhq/coffer/client"
)

// maxEntriesFlag is --max-entries of the commands that expand a snapshot's trees (ls,
// restore, verify): client.Config.MaxEntries.
type maxEntriesFlag int64

func (m *maxEntriesFlag) add(fs *flag.FlagSet) {
	fs.Int64Var((*int64)(m), "max-entries", client.DefaultMaxEntries,
		"refuse a snapshot that expands to more than `N` entries (shared directories counted each time they occur)")
}

// apply sets the limit on the agent the command opens; a limit below 1 is an error.
func (m maxEntriesFlag) apply(spec *cmdSpec) (func(*session), error) {
	if m < 1 {
		return nil, usagef(spec, "--max-entries must be at least 1, got %d", int64(m))
	}
	return func(s *session) { s.agent.MaxEntries = int64(m) }, nil
}
