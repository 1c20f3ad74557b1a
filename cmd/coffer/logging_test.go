package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestCLIHandler(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(newCLIHandler(&buf, slog.LevelWarn))
	l.Info("hidden", "k", 1)
	l.Warn("skipped", "path", "/a b", "err", errors.New("permission denied"))
	l.With("node", "n1").WithGroup("rpc").Error("failed", "code", 6, "empty", "")
	l.Warn("grouped", slog.Group("g", "x", 1))
	want := "coffer: warning: skipped path=\"/a b\" err=\"permission denied\"\n" +
		"coffer: error: failed node=n1 rpc.code=6 rpc.empty=\"\"\n" +
		"coffer: warning: grouped g.x=1\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	h := newCLIHandler(&buf, slog.LevelError)
	if h.Enabled(context.Background(), slog.LevelWarn) || !h.Enabled(context.Background(), slog.LevelError) {
		t.Error("level not honoured")
	}
}

func TestQuietLoggerShowsOnlyErrors(t *testing.T) {
	a, _, stderr := newTestApp(nil)
	a.g.quiet = true
	l := a.logger()
	l.Warn("w")
	l.Error("e")
	if got := stderr.String(); got != "coffer: error: e\n" {
		t.Errorf("quiet logger wrote %q", got)
	}
}

func TestLogFormatJSON(t *testing.T) {
	a, _, stderr := newTestApp(nil)
	a.g.logFormat = logFormatJSON
	l := a.logger()
	l.Info("hidden")
	l.Warn("skipped", "path", "/a b", "passphrase", "hunter2")
	l.Error("failed", "code", 6)
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %q", len(lines), stderr.String())
	}
	for _, line := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("not one JSON object: %q: %v", line, err)
		}
		if obj["component"] != "coffer" || obj["msg"] == nil || obj["level"] == nil || obj["time"] == nil {
			t.Errorf("record lacks component, msg, level or time: %q", line)
		}
	}
	if strings.Contains(stderr.String(), "hunter2") || !strings.Contains(stderr.String(), `"passphrase":"[redacted]"`) {
		t.Errorf("passphrase not redacted: %q", stderr.String())
	}
}

func TestLogFormatRefusesUnknown(t *testing.T) {
	code, _, stderr := runCLI(t, nil, "version", "--log-format", "xml")
	if code != exitUsage || !strings.Contains(stderr, `--log-format "xml": want text or json`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI(t, nil, "--log-format", "json", "version")
	if code != exitOK {
		t.Errorf("--log-format json version: exit %d, stderr %q", code, stderr)
	}
}
