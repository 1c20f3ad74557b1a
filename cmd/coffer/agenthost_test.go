package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// agentHost is an agent host enrolled on a dev cluster, for the end-to-end tests of the
// agent daemon: host web01 of vault web, the vault initialised, and a source directory.
type agentHost struct {
	dir      string            // the test's scratch directory
	adminEnv map[string]string // the cluster admin's CLI environment
	agentEnv map[string]string // the enrolled agent's: its config, passphrase and cache
	src      string            // a directory holding one file, a.txt
}

// newAgentHost starts a cluster with opts, enrolls host web01 for vault web with an
// enrollment token, initialises the vault under passphrase and creates each policy given
// (its name and flags; `--path SRC --host web01` are added).
func newAgentHost(t *testing.T, opts nodetest.Opts, passphrase string, policies ...[]string) agentHost {
	t.Helper()
	c := nodetest.New(t, opts)
	h := agentHost{dir: t.TempDir(), adminEnv: map[string]string{"COFFER_CONFIG": node.DevClientConfig(c.Dir)}}
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := cli(t, h.adminEnv, "admin", "enroll-token", "create", "--vault", "web", "--name", "web01", "--ttl", "1h")
	if code != exitOK {
		t.Fatalf("enroll-token create: exit %d: %s %s", code, out, stderr)
	}
	agentDir := filepath.Join(h.dir, "agent")
	if code, out, stderr := cli(t, map[string]string{}, "agent", "enroll", "--token", strings.TrimSpace(out),
		"--meta", strings.Join(f.Meta, ","), "--ca", f.CA, "--out", agentDir); code != exitOK {
		t.Fatalf("agent enroll: exit %d: %s %s", code, out, stderr)
	}
	h.agentEnv = map[string]string{
		"COFFER_CONFIG":     filepath.Join(agentDir, "coffer.yaml"),
		"COFFER_PASSPHRASE": passphrase,
		"COFFER_CACHE_DIR":  filepath.Join(h.dir, "cache"),
	}
	if code, _, stderr := cli(t, h.agentEnv, "init"); code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	h.src = filepath.Join(h.dir, "src")
	if err := os.MkdirAll(h.src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.src, "a.txt"), []byte("agent host file"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range policies {
		args := append(append([]string{"admin", "policy", "create"}, p...), "--path", h.src, "--host", "web01")
		if code, out, stderr := cli(t, h.adminEnv, args...); code != exitOK {
			t.Fatalf("policy create %s: exit %d: %s %s", p[0], code, out, stderr)
		}
	}
	return h
}

// agentDaemon is a `coffer agent run` running in the test's process.
type agentDaemon struct {
	logs   *syncBuffer
	cancel context.CancelFunc
	exited chan struct{} // closed once main returned; code is then set
	code   int
}

// startAgentDaemon runs `coffer ARGS` with env in the test's process, its log in logs.
// Stop it with stop.
func startAgentDaemon(env map[string]string, args ...string) *agentDaemon {
	a, _, _ := newTestApp(env)
	d := &agentDaemon{logs: &syncBuffer{}, exited: make(chan struct{})}
	a.stderr = d.logs
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() {
		defer close(d.exited)
		d.code = a.main(ctx, args)
	}()
	return d
}

// stop cancels the daemon, waits for it and returns its exit code.
func (d *agentDaemon) stop() int {
	d.cancel()
	<-d.exited
	return d.code
}

// syncBuffer is a bytes.Buffer safe to write from the daemon while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
