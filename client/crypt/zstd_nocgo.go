//go:build !cgo

package crypt

import "github.com/klauspost/compress/zstd"

// newFastEncoder returns the auto policy's encoder of a build without cgo: klauspost's
// SpeedFastest (libzstd needs cgo).
func newFastEncoder() zstdEncoder { return newGoEncoder(zstd.SpeedFastest) }
