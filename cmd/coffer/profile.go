package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"
)

// envCPUProfile names a file to write a CPU profile of this invocation to (for
// `coffer bench --profile` and `go tool pprof`).
const envCPUProfile = "COFFER_CPUPROFILE"

// envTrace names a file to write an execution trace of this invocation to (`go tool
// trace`): where a backup or restore waits, which the CPU profile does not show.
const envTrace = "COFFER_TRACE"

// startProfile starts CPU profiling when COFFER_CPUPROFILE is set and an execution trace
// when COFFER_TRACE is, and returns the function that stops both and writes the files.
func startProfile(getenv func(string) string) func() {
	stopTrace := startToFile(getenv(envTrace), envTrace, trace.Start, trace.Stop)
	stopCPU := startToFile(getenv(envCPUProfile), envCPUProfile, pprof.StartCPUProfile, pprof.StopCPUProfile)
	return func() { stopCPU(); stopTrace() }
}

// startToFile creates path (nothing when it is empty) and starts a recorder writing to
// it; the returned function stops the recorder and closes the file. A failure is a
// warning naming the environment variable env, never an error of the command.
func startToFile(path, env string, start func(io.Writer) error, stop func()) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = start(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "coffer: warning: %s: %v\n", env, err)
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
