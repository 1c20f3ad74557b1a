// Package chaos is the fault-injection suite across the container cluster of
// deploy/compose.yaml (issue 14, docs/reliability.md): agents back up changing trees
// continuously while a seeded nemesis kills, pauses, partitions and fills the nodes; a
// checker then restores every acknowledged snapshot, checks the history of commits and
// snapshot listings for linearizability (porcupine), and classifies every failed backup
// by the faults active while it ran (inside or outside the erasure-coding envelope).
//
// The driver is TestChaos (chaos_test.go), gated by COFFER_CHAOS=1 so that `make test`
// skips it; `make test-chaos` and `make test-chaos-short` run it. This file's package
// holds the parts that need no containers: the fault plan, the envelope arithmetic and the
// linearizability model, each with its own tests.
package chaos
