package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the logger's and the test's goroutines.
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

// jsonObject decodes one line as a JSON object and fails on a key that occurs twice
// at the top level (encoding/json would keep the last silently).
func jsonObject(line string) (map[string]any, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	out := map[string]any{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key := k.(string)
		if _, dup := out[key]; dup {
			return nil, errors.New("key " + key + " occurs twice")
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value on the line")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the object")
	}
	return out, nil
}

func TestLoggerJSONLastAttributeWinsAndSecretsRedacted(t *testing.T) {
	var buf bytes.Buffer
	l, err := newLogger(&buf, "info", logJSON)
	if err != nil {
		t.Fatal(err)
	}
	nodeLog := l.With("node", "meta-1", "component", "node")
	nodeLog.With("component", "meta").Info("applied", "index", 7)
	nodeLog.With("component", "segstore").Warn("compaction", "component", "pebble", "cluster_secret", "s3cr3t",
		slog.Group("request", "method", "chunk.Put", "passphrase", "hunter2"))
	nodeLog.Debug("hidden")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	first, err := jsonObject(lines[0])
	if err != nil {
		t.Fatalf("%q: %v", lines[0], err)
	}
	if first["component"] != "meta" || first["node"] != "meta-1" || first["msg"] != "applied" || first["index"] != 7.0 {
		t.Errorf("first record: %v", first)
	}
	second, err := jsonObject(lines[1])
	if err != nil {
		t.Fatalf("%q: %v", lines[1], err)
	}
	req, _ := second["request"].(map[string]any)
	if second["component"] != "pebble" || second["cluster_secret"] != "[redacted]" || req["method"] != "chunk.Put" || req["passphrase"] != "[redacted]" {
		t.Errorf("second record: %v", second)
	}
	if strings.Contains(buf.String(), "s3cr3t") || strings.Contains(buf.String(), "hunter2") {
		t.Errorf("a secret was logged: %s", buf.String())
	}
	if _, err := newLogger(&buf, "info", "xml"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("--log-format xml: %v", err)
	}
}

// TestDevLogFormatJSON is issue 16's log acceptance: `cofferd dev --log-format json`
// writes only JSON objects, one per line, each with time, level and message; the nodes'
// records name their node and component, and RPC records carry a request group.
func TestDevLogFormatJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dev cluster")
	}
	dir := t.TempDir()
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"dev", "--dir", dir, "--meta", "1", "--chunk", "6", "--log-format", "json", "--log-level", "debug"}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(stdout.String(), "dev cluster ready") || !strings.Contains(stderr.String(), `"request":{`) {
		select {
		case c := <-code:
			t.Fatalf("cofferd dev exited %d early:\n%s\n%s", c, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready cluster with RPC records in time:\n%s", stdout.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(stdout.String(), "metrics (Prometheus targets, /metrics): 127.0.0.1:") {
		t.Errorf("the ready message names no metrics addresses:\n%s", stdout.String())
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("cofferd dev exited %d", c)
		}
	case <-time.After(time.Minute):
		t.Fatal("cofferd dev did not stop")
	}
	out := stderr.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	components := map[string]bool{}
	requests := 0
	for i, line := range lines {
		obj, err := jsonObject(line)
		if err != nil {
			t.Fatalf("line %d is not one JSON object (%v): %q", i+1, err, line)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := obj[k]; !ok {
				t.Errorf("line %d has no %q: %q", i+1, k, line)
			}
		}
		if _, ok := obj["node"]; ok {
			c, _ := obj["component"].(string)
			if c == "" {
				t.Errorf("line %d names a node but no component: %q", i+1, line)
			}
			components[c] = true
		}
		if r, ok := obj["request"].(map[string]any); ok {
			requests++
			if r["method"] == nil || r["peer"] == nil || r["code"] == nil {
				t.Errorf("line %d: request group lacks method, peer or code: %q", i+1, line)
			}
		}
	}
	if requests == 0 {
		t.Error("no RPC record with a request group")
	}
	for _, c := range []string{"node", "rpc", "meta"} {
		if !components[c] {
			t.Errorf("no record of component %q (saw %v)", c, components)
		}
	}
	t.Logf("%d JSON lines, %d RPC records, components %v", len(lines), requests, components)
}
