package client

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// DirtyMap is a parsed dirty-block map: the byte ranges of a device or image that changed
// since its last backup. The file format (client/FORMAT.md, "Dirty-block maps") is text:
//
//	# comment lines and blank lines are ignored
//	coffer-dirty-map 1
//	block-size 65536
//	0 16
//	1024 1
//
// After the header line and the block-size line (the map's own granularity in bytes, a
// positive integer, not necessarily the backup's block size), each line is "START COUNT":
// COUNT blocks of block-size bytes starting at block START changed. Ranges may come in any
// order and overlap. A QEMU dirty bitmap (granularity plus set bits) or `thin_delta`
// output (data block size plus differing ranges) convert to it line by line.
type DirtyMap struct {
	BlockSize int64
	ranges    [][2]int64 // byte ranges [start, end), sorted and merged
}

// maxDirtyBlock is the largest block size a dirty map may give, in bytes.
const maxDirtyBlock = 1 << 40

// ParseDirtyMap reads a dirty-block map. Errors wrap ErrInvalid and name the line.
func ParseDirtyMap(r io.Reader) (*DirtyMap, error) {
	sc := bufio.NewScanner(r)
	m := &DirtyMap{}
	header := false
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Fields(s)
		switch {
		case !header:
			if len(f) != 2 || f[0] != "coffer-dirty-map" || f[1] != "1" {
				return nil, fmt.Errorf("%w: dirty map line %d: want the header \"coffer-dirty-map 1\", got %q", ErrInvalid, line, s)
			}
			header = true
		case m.BlockSize == 0:
			if len(f) != 2 || f[0] != "block-size" {
				return nil, fmt.Errorf("%w: dirty map line %d: want \"block-size BYTES\", got %q", ErrInvalid, line, s)
			}
			bs, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || bs <= 0 || bs > maxDirtyBlock {
				return nil, fmt.Errorf("%w: dirty map line %d: bad block size %q", ErrInvalid, line, f[1])
			}
			m.BlockSize = bs
		default:
			if len(f) != 2 {
				return nil, fmt.Errorf("%w: dirty map line %d: want \"START COUNT\", got %q", ErrInvalid, line, s)
			}
			start, err1 := strconv.ParseInt(f[0], 10, 64)
			count, err2 := strconv.ParseInt(f[1], 10, 64)
			if err1 != nil || err2 != nil || start < 0 || count <= 0 {
				return nil, fmt.Errorf("%w: dirty map line %d: bad range %q (two integers, START ≥ 0, COUNT > 0)", ErrInvalid, line, s)
			}
			if start > math.MaxInt64/m.BlockSize-count {
				return nil, fmt.Errorf("%w: dirty map line %d: range %q overflows", ErrInvalid, line, s)
			}
			m.ranges = append(m.ranges, [2]int64{start * m.BlockSize, (start + count) * m.BlockSize})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("client: dirty map: %w", err)
	}
	if m.BlockSize == 0 {
		return nil, fmt.Errorf("%w: dirty map: no header and block-size line", ErrInvalid)
	}
	m.normalize()
	return m, nil
}

// normalize sorts and merges the ranges.
func (m *DirtyMap) normalize() {
	slices.SortFunc(m.ranges, func(a, b [2]int64) int { return compareInt64(a[0], b[0]) })
	merged := m.ranges[:0]
	for _, r := range m.ranges {
		if l := len(merged); l > 0 && r[0] <= merged[l-1][1] {
			merged[l-1][1] = max(merged[l-1][1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	m.ranges = merged
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Overlaps reports whether any changed range overlaps the bytes [start, end).
func (m *DirtyMap) Overlaps(start, end int64) bool {
	// First range ending after start.
	i, _ := slices.BinarySearchFunc(m.ranges, start, func(r [2]int64, t int64) int {
		if r[1] <= t {
			return -1
		}
		return 1
	})
	return i < len(m.ranges) && m.ranges[i][0] < end
}

// End is the end of the last changed range (0 for an empty map).
func (m *DirtyMap) End() int64 {
	if len(m.ranges) == 0 {
		return 0
	}
	return m.ranges[len(m.ranges)-1][1]
}

// Changed returns the number of changed bytes the map lists.
func (m *DirtyMap) Changed() int64 {
	var n int64
	for _, r := range m.ranges {
		n += r[1] - r[0]
	}
	return n
}

// ParseThinDelta reads the XML that LVM's `thin_delta` prints for two thin devices of one
// pool (thin-provisioning-tools):
//
//	<superblock ... data_block_size="128" ...>
//	  <diff left="1" right="2">
//	    <same begin="0" length="16"/>
//	    <different begin="16" length="1"/>
//	    <right_only begin="17" length="3"/>
//	  </diff>
//	</superblock>
//
// data_block_size is in 512-byte sectors; begin and length count data blocks. Every range
// except <same> (different, left_only, right_only, and the per-block ranges of --verbose
// output) is a changed range. Errors wrap ErrInvalid.
func ParseThinDelta(r io.Reader) (*DirtyMap, error) {
	dec := xml.NewDecoder(r)
	m := &DirtyMap{}
	var stack []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: thin_delta xml: %v", ErrInvalid, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			stack = append(stack, t.Name.Local)
			attr := func(name string) (int64, bool, error) {
				for _, a := range t.Attr {
					if a.Name.Local == name {
						v, err := strconv.ParseInt(a.Value, 10, 64)
						if err != nil || v < 0 {
							return 0, true, fmt.Errorf("%w: thin_delta xml: <%s %s=%q>: not a count", ErrInvalid, t.Name.Local, name, a.Value)
						}
						return v, true, nil
					}
				}
				return 0, false, nil
			}
			if t.Name.Local == "superblock" {
				sectors, ok, err := attr("data_block_size")
				if err != nil {
					return nil, err
				}
				if !ok || sectors <= 0 {
					return nil, fmt.Errorf("%w: thin_delta xml: <superblock> without a data_block_size", ErrInvalid)
				}
				// NB: bounded as the text format's block-size is (1 TiB; thin pools use
				// 64 KiB to 1 GiB): a larger count of sectors would wrap around in bytes.
				if sectors > maxDirtyBlock/512 {
					return nil, fmt.Errorf("%w: thin_delta xml: data_block_size %d sectors: more than %d bytes", ErrInvalid, sectors, int64(maxDirtyBlock))
				}
				m.BlockSize = sectors * 512
				continue
			}
			if slices.Contains(stack[:len(stack)-1], "same") || t.Name.Local == "same" {
				continue
			}
			begin, hasBegin, err := attr("begin")
			if err != nil {
				return nil, err
			}
			length, hasLen, err := attr("length")
			if err != nil {
				return nil, err
			}
			if !hasBegin || !hasLen || length == 0 {
				continue
			}
			if m.BlockSize == 0 {
				return nil, fmt.Errorf("%w: thin_delta xml: <%s> before <superblock data_block_size>", ErrInvalid, t.Name.Local)
			}
			if begin > math.MaxInt64/m.BlockSize-length {
				return nil, fmt.Errorf("%w: thin_delta xml: range begin=%d length=%d overflows", ErrInvalid, begin, length)
			}
			m.ranges = append(m.ranges, [2]int64{begin * m.BlockSize, (begin + length) * m.BlockSize})
		case xml.EndElement:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
	if m.BlockSize == 0 {
		return nil, fmt.Errorf("%w: thin_delta xml: no <superblock data_block_size>", ErrInvalid)
	}
	m.normalize()
	return m, nil
}

// ReadDirtyMap parses a dirty-block map in either format: thin_delta XML when the first
// non-blank byte is '<', else the coffer-dirty-map text format.
func ReadDirtyMap(r io.Reader) (*DirtyMap, error) {
	br := bufio.NewReader(r)
	for {
		b, err := br.Peek(1)
		if err != nil {
			return ParseDirtyMap(br) // empty: ParseDirtyMap names what is missing
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			br.ReadByte()
			continue
		case '<':
			return ParseThinDelta(br)
		}
		return ParseDirtyMap(br)
	}
}
