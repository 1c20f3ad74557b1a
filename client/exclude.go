package client

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ExcludeMatcher returns a BackupOptions.Exclude for patterns (filepath.Match syntax): a
// pattern with a '/' matches an entry's absolute path, one without matches its base
// name at any depth ("*.tmp", "node_modules", "/var/cache/*"). A malformed pattern is
// an error naming it; no patterns give nil.
func ExcludeMatcher(patterns []string) (func(path string) bool, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	for _, p := range patterns {
		if p == "" {
			return nil, fmt.Errorf("client: empty exclude pattern")
		}
		if _, err := filepath.Match(p, ""); err != nil {
			return nil, fmt.Errorf("client: exclude pattern %q: %w", p, err)
		}
	}
	ps := append([]string(nil), patterns...)
	return func(path string) bool {
		base := filepath.Base(path)
		for _, p := range ps {
			subject := base
			if strings.Contains(p, "/") {
				subject = path
			}
			if ok, _ := filepath.Match(p, subject); ok {
				return true
			}
		}
		return false
	}, nil
}
