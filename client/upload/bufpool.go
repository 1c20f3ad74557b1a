package upload

import "sync"

// Buffer size classes: class k holds buffers of capacity 2^k + 2^(k-3), so that a
// power-of-two chunk plus its envelope overhead fits the class of its size.
const (
	minClass = 12 // 4.5 KiB
	maxClass = 26 // 72 MiB
)

func classCap(k int) int { return 1<<k + 1<<(k-3) }

// bufPool recycles byte buffers by size class. Safe for concurrent use.
type bufPool struct {
	classes [maxClass + 1]sync.Pool // *[]byte
}

func classFor(n int) int {
	for k := minClass; k <= maxClass; k++ {
		if classCap(k) >= n {
			return k
		}
	}
	return -1
}

// get returns an empty buffer with capacity at least n.
func (p *bufPool) get(n int) []byte {
	k := classFor(n)
	if k < 0 {
		return make([]byte, 0, n)
	}
	if b, ok := p.classes[k].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, classCap(k))
}

// put recycles b if its capacity is exactly a class size; other buffers are dropped.
func (p *bufPool) put(b []byte) {
	k := classFor(cap(b))
	if k < 0 || classCap(k) != cap(b) {
		return
	}
	b = b[:0]
	p.classes[k].Put(&b)
}
