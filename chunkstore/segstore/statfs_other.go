//go:build !linux

package segstore

// availableBytes is unknown (0) on platforms without a supported statfs.
func availableBytes(string) (int64, error) { return 0, nil }
