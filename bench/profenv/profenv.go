// Package profenv starts what the COFFER_CPUPROFILE and COFFER_TRACE environment
// variables ask of a coffer or cofferd process: a CPU profile (`go tool pprof`) and an
// execution trace (`go tool trace`), written when the process stops. `coffer bench
// --profile` sets the first; the traces of an agent and of its cluster, taken in one run,
// show which side a backup or restore waits on.
package profenv

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"
)

// The environment variables Start reads; each names the file to write.
const (
	CPUProfile = "COFFER_CPUPROFILE"
	Trace      = "COFFER_TRACE"
)

// Start starts CPU profiling when getenv(CPUProfile) names a file and an execution trace
// when getenv(Trace) does, and returns the function that stops both and writes the
// files. A file that cannot be created, or a recorder that does not start, is a warning
// on warn ("prog: warning: VARIABLE: error"), never an error of the process.
func Start(getenv func(string) string, warn io.Writer, prog string) func() {
	stopTrace := startToFile(getenv(Trace), Trace, warn, prog, trace.Start, trace.Stop)
	stopCPU := startToFile(getenv(CPUProfile), CPUProfile, warn, prog, pprof.StartCPUProfile, pprof.StopCPUProfile)
	return func() { stopCPU(); stopTrace() }
}

// startToFile creates path (nothing when it is empty) and starts a recorder writing to
// it; the returned function stops the recorder and closes the file.
func startToFile(path, env string, warn io.Writer, prog string, start func(io.Writer) error, stop func()) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = start(f)
	}
	if err != nil {
		fmt.Fprintf(warn, "%s: warning: %s: %v\n", prog, env, err)
		if f != nil {
			f.Close()
		}
		return func() {}
	}
	return func() {
		stop()
		f.Close()
	}
}
