//go:build !cgo

package crypt

func cgoBuilt() bool { return false }
