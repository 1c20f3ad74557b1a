package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/client/clientconfig"
)

// TestUseCacheKeySecret: with a cache directory the agent's key cache is keyed by the
// client's TLS key file; without one, or with an unreadable key file, it stays off.
func TestUseCacheKeySecret(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "client.key")
	if err := os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY-----\ntest\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	newSession := func(keyPath string) *session {
		return &session{cfg: clientconfig.File{Key: keyPath}, logger: slog.New(slog.NewTextHandler(&logs, nil))}
	}

	s := newSession(key)
	s.useCache(filepath.Join(dir, "cache"))
	if s.agent.CacheDir != filepath.Join(dir, "cache") || string(s.agent.KeyCacheSecret) != "-----BEGIN PRIVATE KEY-----\ntest\n" {
		t.Errorf("with a cache dir: CacheDir %q, secret %q", s.agent.CacheDir, s.agent.KeyCacheSecret)
	}

	s = newSession(key)
	s.useCache("")
	if s.agent.CacheDir != "" || s.agent.KeyCacheSecret != nil {
		t.Errorf("--no-cache: CacheDir %q, secret %q", s.agent.CacheDir, s.agent.KeyCacheSecret)
	}

	s = newSession(filepath.Join(dir, "missing.key"))
	s.useCache(filepath.Join(dir, "cache"))
	if s.agent.KeyCacheSecret != nil {
		t.Errorf("unreadable key file: secret %q", s.agent.KeyCacheSecret)
	}
	if !bytes.Contains(logs.Bytes(), []byte("local key cache off")) {
		t.Errorf("unreadable key file not logged: %q", logs.String())
	}
}
