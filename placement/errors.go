package placement

import "errors"

// Sentinel errors. Match them with errors.Is.
var (
	// ErrInvalid marks a malformed map or argument (see Map.Validate and Map.Place).
	ErrInvalid = errors.New("placement: invalid")
	// ErrNotEnoughNodes: a PG needs more eligible nodes than the map has.
	ErrNotEnoughNodes = errors.New("placement: not enough nodes")
)
