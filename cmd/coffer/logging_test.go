package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
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
