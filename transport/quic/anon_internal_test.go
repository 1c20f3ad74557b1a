package quic

import (
	"fmt"
	"testing"
	"time"
)

// TestLogLimiter: one event per key per interval, the suppressed ones counted into the
// next; a full table of live keys drops new keys instead of growing.
func TestLogLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLogLimiter(time.Minute, func() time.Time { return now })
	if ok, _ := l.allow("a"); !ok {
		t.Fatal("first event not allowed")
	}
	for range 5 {
		if ok, _ := l.allow("a"); ok {
			t.Fatal("second event within the interval allowed")
		}
	}
	if ok, _ := l.allow("b"); !ok {
		t.Fatal("another key's first event not allowed")
	}
	now = now.Add(time.Minute)
	if ok, skipped := l.allow("a"); !ok || skipped != 5 {
		t.Fatalf("after the interval: allowed %v with %d skipped, want true and 5", ok, skipped)
	}
	l = newLogLimiter(time.Minute, func() time.Time { return now })
	for i := range maxLogKeys {
		l.allow(fmt.Sprint("k", i))
	}
	if ok, _ := l.allow("new"); ok || len(l.last) != maxLogKeys {
		t.Fatalf("full table: new key allowed %v, %d keys, want false and %d", ok, len(l.last), maxLogKeys)
	}
	now = now.Add(time.Minute)
	if ok, _ := l.allow("new"); !ok || len(l.last) > maxLogKeys {
		t.Fatalf("after expiry: new key allowed %v, %d keys", ok, len(l.last))
	}
}
