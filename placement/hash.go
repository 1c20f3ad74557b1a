package placement

import (
	"encoding/binary"
	"math/bits"
)

// hashVersion is the first byte hashed: the placement format version (see FORMAT.md).
const hashVersion = 1

// FNV-1a 64-bit parameters.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// placementHash is the version-1 placement hash: FNV-1a 64 over
// 0x01 || pg (4 bytes big-endian) || position (1 byte) || node ID bytes, finished with
// the splitmix64 mixer. It is part of the placement format: every agent, coordinator and repair worker
// must compute the same value, so it must never change within a format version.
func placementHash(pg uint32, pos uint8, id NodeID) uint64 {
	var hdr [6]byte
	hdr[0] = hashVersion
	binary.BigEndian.PutUint32(hdr[1:5], pg)
	hdr[5] = pos
	h := uint64(fnvOffset64)
	for _, b := range hdr {
		h ^= uint64(b)
		h *= fnvPrime64
	}
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= fnvPrime64
	}
	return mix64(h)
}

// mix64 is the splitmix64 finalizer: a bijection with full avalanche.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// log2Q32 returns log2(v) in fixed point with 32 fractional bits, truncated, for v ≥ 1.
// It uses only integer arithmetic (repeated squaring of the normalised mantissa), so it
// gives bit-identical results on every platform, unlike math.Log whose last bit may
// differ between architectures and fused multiply-add choices.
func log2Q32(v uint64) uint64 {
	if v == 0 {
		v = 1
	}
	e := uint64(bits.Len64(v) - 1)
	m := v << (63 - e) // mantissa in [1,2) with 63 fractional bits
	var frac uint64
	for range 32 {
		hi, lo := bits.Mul64(m, m) // m² with 126 fractional bits, in [1,4)
		// If m² ≥ 2 emit a 1 bit and halve; branch-free because the bit is random.
		bit := hi >> 63
		frac = frac<<1 | bit
		m = hi<<(1-bit) | (lo>>63)&(bit^1)
	}
	return e<<32 | frac
}

// negLog2Q32 returns -log2(u) in 32-bit fixed point for u = v/2^64, v = h|1. It is ≥ 1
// and at most 64<<32, so it converts to float64 exactly.
func negLog2Q32(h uint64) uint64 {
	return 64<<32 - log2Q32(h|1)
}

// score is the weighted rendezvous score weight / -ln(u) up to the constant factor ln 2,
// which does not change any ordering. The division is a single IEEE-754 operation on
// exactly representable operands, so the result is the same everywhere.
func score(weight float64, h uint64) float64 {
	return weight / float64(negLog2Q32(h))
}
