package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"runtime/trace"
)

// envCPUProfile names a file to write a CPU profile of this invocation to (for
// `coffer bench --profile` and `go tool pprof`).
const envCPUProfile = "COFFER_CPUPROFILE"

// startProfile starts CPU profiling when COFFER_CPUPROFILE is set and returns the
// function that stops it and writes the file.
func startProfile(getenv func(string) string) func() {
	stopTrace := startTrace(getenv)
	stopCPU := startCPUProfile(getenv)
	return func() { stopCPU(); stopTrace() }
}

// envTrace names a file to write an execution trace of this invocation to (`go tool
// trace`): where a backup or restore waits, which the CPU profile does not show.
const envTrace = "COFFER_TRACE"

func startTrace(getenv func(string) string) func() {
	path := getenv(envTrace)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = trace.Start(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "coffer: warning: %s: %v\n", envTrace, err)
		if f != nil {
			f.Close()
		}
		return func() {}
	}
	return func() {
		trace.Stop()
		f.Close()
	}
}

func startCPUProfile(getenv func(string) string) func() {
	path := getenv(envCPUProfile)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "coffer: warning: %s: %v\n", envCPUProfile, err)
		if f != nil {
			f.Close()
		}
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
