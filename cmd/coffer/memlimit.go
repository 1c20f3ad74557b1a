package main

import "runtime/debug"

// agentMemoryLimit is the Go runtime's soft memory limit for one coffer process on procs
// Ps (GOMAXPROCS): 224 MiB up to 2 Ps, plus 32 MiB per P beyond (each P adds a chunk
// reader's 8 MiB buffer, a bundle buffer and a zstd encoder state). The live heap of a
// backup is bounded by the upload pipeline's MaxInFlight (64 MiB of chunk buffers,
// plaintext and sealed) plus those per-P buffers, about 110-140 MiB on 1-2 Ps; without a
// limit the collector lets the heap grow to twice the live heap before collecting, which
// put the agent's peak RSS near 300 MiB on a large file (docs/benchmarks.md, 2026-12-06).
// The limit is soft: near it the collector runs more often; nothing fails.
func agentMemoryLimit(procs int) int64 {
	return 224<<20 + 32<<20*int64(max(procs-2, 0))
}

// setMemoryLimit applies agentMemoryLimit for the Ps the runtime chose at start (the
// spare P of an upload, sched.go, runs no worker and adds no buffers) unless the user
// set GOMEMLIMIT (which the runtime has applied already).
func setMemoryLimit(getenv func(string) string, procs int) {
	if getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(agentMemoryLimit(procs))
}
