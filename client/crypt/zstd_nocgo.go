//go:build !cgo

package crypt

// newFastEncoder returns the auto policy's encoder of a build without cgo: klauspost's
// SpeedFastest (libzstd needs cgo).
func newFastEncoder() fastEncoder { return newGoFastEncoder() }
