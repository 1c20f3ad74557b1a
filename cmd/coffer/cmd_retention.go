// Helpers shared by the retention commands (forget, lock, hold, admin audit: one file
// each): snapshot references, refusal wording and the time and duration flags.

package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// shortTargets shortens a comma-separated list of full snapshot IDs for the table.
func shortTargets(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if len(p) == 64 {
			parts[i] = shortHex(p)
		}
	}
	return strings.Join(parts, ",")
}

// resolveSnapshots turns refs (full IDs, unique prefixes of at least 4 hex digits, or
// "latest") into snapshot IDs of the session's vault, without the vault key.
func resolveSnapshots(ctx context.Context, s *session, refs []string) ([]meta.SnapshotID, error) {
	snaps, err := s.meta.ListSnapshots(ctx, s.vault)
	if err != nil {
		return nil, retentionErr(err, "list snapshots of vault %q", s.vault)
	}
	var out []meta.SnapshotID
	for _, ref := range refs {
		r := strings.ToLower(strings.TrimSpace(ref))
		if r == "latest" {
			if len(snaps) == 0 {
				return nil, fmt.Errorf("snapshot %q: vault %q has no snapshots", ref, s.vault)
			}
			out = append(out, snaps[len(snaps)-1].ID) // sorted by commit time
			continue
		}
		if len(r) < 4 || len(r) > 64 || strings.Trim(r, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("snapshot %q: give \"latest\", a full ID or at least 4 hex digits of one", ref)
		}
		var found []meta.SnapshotID
		for _, sn := range snaps {
			if strings.HasPrefix(sn.ID.String(), r) {
				found = append(found, sn.ID)
			}
		}
		switch len(found) {
		case 0:
			return nil, fmt.Errorf("snapshot %q not found in vault %q", ref, s.vault)
		case 1:
			out = append(out, found[0])
		default:
			return nil, fmt.Errorf("snapshot %q is ambiguous in vault %q (%d matches): give more digits", ref, s.vault, len(found))
		}
	}
	return out, nil
}

// retentionErr words a refusal for the terminal: permission and lock refusals are
// plain messages (they say what the cluster refused and why).
func retentionErr(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, meta.ErrDenied):
		return plainf(err, "%s: permission denied: %s", what, errorMessage(err))
	case errors.Is(err, meta.ErrLocked):
		return plainf(err, "%s: refused: %s", what, errorMessage(err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// parseUntil parses an RFC 3339 time or a YYYY-MM-DD date (midnight UTC).
func parseUntil(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither RFC 3339 (2027-01-01T00:00:00Z) nor YYYY-MM-DD", s)
}

// parseLongDuration parses a Go duration or a count with a d (day), w (week) or y
// (365 days) suffix.
func parseLongDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return 0, fmt.Errorf("negative duration %q", s)
		}
		return d, nil
	}
	unit := map[byte]time.Duration{'d': 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}
	if len(s) >= 2 {
		if u, ok := unit[s[len(s)-1]]; ok {
			n, err := strconv.Atoi(s[:len(s)-1])
			if err == nil && n >= 0 && n <= 1000*365 {
				return time.Duration(n) * u, nil
			}
		}
	}
	return 0, fmt.Errorf("%q is not a duration (30d, 12h, 2w, 1y)", s)
}
