// Package hooks makes a capture consistent: it runs a pre-hook command, freezes file
// systems (FIFREEZE), runs the capture, thaws them (always: also on error, panic-free
// cancellation and timeout) and runs a post-hook command (always, also when the pre-hook
// or the capture failed).
//
// Order: pre-hook → freeze → capture → thaw → post-hook. A failing pre-hook aborts before
// anything is frozen or captured. A file system stays frozen at most FreezeTimeout: then
// it is thawed and the capture is cancelled. The freezer is an interface so tests (and
// platforms without FIFREEZE) can supply their own.
package hooks
