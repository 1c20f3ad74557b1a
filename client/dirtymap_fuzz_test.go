package client

import (
	"errors"
	"strings"
	"testing"
)

// TestThinDeltaBlockSizeOverflow: a data_block_size whose byte size does not fit in
// 64 bits is refused; before, 2^55+1 sectors wrapped around to a block size of 512
// bytes and the map listed the wrong blocks.
func TestThinDeltaBlockSizeOverflow(t *testing.T) {
	for _, sectors := range []string{"36028797018963969", "18014398509481985", "9223372036854775807"} {
		x := `<superblock data_block_size="` + sectors + `"><diff><different begin="1" length="1"/></diff></superblock>`
		m, err := ReadDirtyMap(strings.NewReader(x))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "data_block_size") {
			t.Errorf("data_block_size=%s: map %+v, err %v; want ErrInvalid naming data_block_size", sectors, m, err)
		}
	}
}

// FuzzReadDirtyMap: a dirty map (text or thin_delta XML, from a file the operator's
// tooling writes) never panics, and what parses is a positive block size with sorted,
// disjoint, non-empty ranges of non-negative bytes.
func FuzzReadDirtyMap(f *testing.F) {
	f.Add("coffer-dirty-map 1\nblock-size 4096\n10 2\n0 1\n11 4\n")
	f.Add("coffer-dirty-map 1\nblock-size 512\n9223372036854775 1\n")
	f.Add(`<superblock data_block_size="128"><diff><same begin="0" length="16"/><different begin="16" length="1"/><right_only begin="17" length="3"/></diff></superblock>`)
	f.Add(`<superblock data_block_size="36028797018963969"><diff><different begin="1" length="1"/></diff></superblock>`)
	f.Fuzz(func(t *testing.T, in string) {
		m, err := ReadDirtyMap(strings.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			return
		}
		if m.BlockSize <= 0 {
			t.Fatalf("block size %d", m.BlockSize)
		}
		for i, r := range m.ranges {
			if r[0] < 0 || r[1] <= r[0] || (i > 0 && r[0] <= m.ranges[i-1][1]) {
				t.Fatalf("range %d %v (previous %v): not sorted, disjoint and non-empty", i, r, m.ranges[max(i-1, 0)])
			}
		}
	})
}
