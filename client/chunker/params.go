package chunker

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// ErrInvalid marks bad parameters, a bad algorithm name or a bad argument.
var ErrInvalid = errors.New("chunker: invalid")

// Bounds on parameters (FORMAT.md).
const (
	// Window is the number of bytes the rolling gear hash depends on; Min must be at
	// least this so that every boundary test sees a full window.
	Window = 64
	// MinAvg is the smallest allowed average size (the large mask needs Avg bits − 2 ≥ 6).
	MinAvg = 256
	// MaxMax is the largest allowed maximum chunk size.
	MaxMax = 8 << 20
)

// Algorithm name prefixes (FORMAT.md).
const (
	namePrefixV1 = "fastcdc-v1-"
	namePrefixV2 = "fastcdc-v2-"
)

// Params are the chunk size bounds in bytes and the algorithm: every chunk but the last
// of a stream is at least Min and at most Max long; sizes cluster around Avg.
type Params struct {
	Min, Avg, Max int
	// ZeroRuns selects fastcdc-v2: the cuts of fastcdc-v1 plus a cut after every 64-byte
	// window of zero bytes (from Min on), so that chunks end where zero padding begins
	// (file ends in a disk image, section padding in a binary). False is fastcdc-v1.
	ZeroRuns bool
}

// DefaultParams returns what new vaults use: fastcdc-v2, 256 KiB / 1 MiB / 4 MiB.
func DefaultParams() Params {
	return Params{Min: 256 << 10, Avg: 1 << 20, Max: 4 << 20, ZeroRuns: true}
}

// V1Params returns the default sizes with fastcdc-v1, the algorithm of vaults created
// before fastcdc-v2 (still implemented: a vault keeps its chunker for life).
func V1Params() Params {
	p := DefaultParams()
	p.ZeroRuns = false
	return p
}

// Validate reports the first problem: Min < Window, Avg not a power of two or below
// MinAvg, Min ≥ Avg, Avg ≥ Max, or Max > MaxMax. Errors wrap ErrInvalid.
func (p Params) Validate() error {
	switch {
	case p.Min < Window:
		return fmt.Errorf("%w: min %d is below the %d-byte hash window", ErrInvalid, p.Min, Window)
	case p.Avg < MinAvg || p.Avg&(p.Avg-1) != 0:
		return fmt.Errorf("%w: avg %d is not a power of two ≥ %d", ErrInvalid, p.Avg, MinAvg)
	case p.Min >= p.Avg:
		return fmt.Errorf("%w: min %d is not below avg %d", ErrInvalid, p.Min, p.Avg)
	case p.Avg >= p.Max:
		return fmt.Errorf("%w: avg %d is not below max %d", ErrInvalid, p.Avg, p.Max)
	case p.Max > MaxMax:
		return fmt.Errorf("%w: max %d is above %d", ErrInvalid, p.Max, MaxMax)
	}
	return nil
}

// Name returns the algorithm name with its parameters in bytes, for example
// "fastcdc-v2-262144-1048576-4194304". It is recorded per vault: two chunkers with the
// same name and seed cut every input at the same places.
func (p Params) Name() string {
	prefix := namePrefixV1
	if p.ZeroRuns {
		prefix = namePrefixV2
	}
	return prefix + strconv.Itoa(p.Min) + "-" + strconv.Itoa(p.Avg) + "-" + strconv.Itoa(p.Max)
}

// ParseName parses a name made by Name (fastcdc-v1 or fastcdc-v2) and validates the
// parameters. Only the canonical form is accepted (decimal, no sign, no leading zeros).
// Errors wrap ErrInvalid.
func ParseName(s string) (Params, error) {
	zeroRuns := false
	rest, ok := strings.CutPrefix(s, namePrefixV1)
	if !ok {
		rest, ok = strings.CutPrefix(s, namePrefixV2)
		zeroRuns = true
	}
	if !ok {
		return Params{}, fmt.Errorf("chunker: parse name %q: %w: unknown algorithm, want %s<min>-<avg>-<max> or %s<min>-<avg>-<max>", s, ErrInvalid, namePrefixV1, namePrefixV2)
	}
	parts := strings.Split(rest, "-")
	if len(parts) != 3 {
		return Params{}, fmt.Errorf("chunker: parse name %q: %w: want 3 sizes, have %d", s, ErrInvalid, len(parts))
	}
	var v [3]int
	for i, f := range parts {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || strconv.Itoa(n) != f {
			return Params{}, fmt.Errorf("chunker: parse name %q: %w: size %q is not a canonical decimal", s, ErrInvalid, f)
		}
		v[i] = n
	}
	p := Params{Min: v[0], Avg: v[1], Max: v[2], ZeroRuns: zeroRuns}
	if err := p.Validate(); err != nil {
		return Params{}, fmt.Errorf("chunker: parse name %q: %w", s, err)
	}
	return p, nil
}

// avgBits returns log2(Avg) for a valid p.
func (p Params) avgBits() int { return bits.TrailingZeros(uint(p.Avg)) }
