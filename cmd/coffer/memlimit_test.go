package main

import "testing"

func TestAgentMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		procs int
		mib   int64
	}{{1, 224}, {2, 224}, {3, 256}, {8, 416}} {
		if got := agentMemoryLimit(c.procs) >> 20; got != c.mib {
			t.Errorf("agentMemoryLimit(%d) = %d MiB, want %d", c.procs, got, c.mib)
		}
	}
}
