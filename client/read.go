package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/chunker"
	"github.com/cofferhq/coffer/client/tree"
)

// maxHole is the longest single hole extent; longer holes become several extents.
const maxHole = 1 << 31

// reader reads and chunks files for one worker goroutine; it is not shared.
type reader struct {
	b   *backup
	ch  *chunker.Chunker
	buf []byte // 2 * chunker Max, reused for every file

	bch  *chunker.Chunker // cuts bundles of small files (bundleParams)
	bbuf []byte           // 2 * bundle Max, reused for every bundle
}

func (b *backup) newReader() (*reader, error) {
	ch, err := chunker.New(b.a.chunker, b.a.keys.GearSeed())
	if err != nil {
		return nil, fmt.Errorf("client: chunker: %w", err)
	}
	bp := bundleParams()
	bch, err := chunker.New(bp, b.a.keys.GearSeed())
	if err != nil {
		return nil, fmt.Errorf("client: bundle chunker: %w", err)
	}
	return &reader{b: b, ch: ch, buf: make([]byte, 2*b.a.chunker.Max), bch: bch, bbuf: make([]byte, 2*bp.Max)}, nil
}

// region is a byte range of a file: data to read, or a hole.
type region struct {
	start, end int64
	hole       bool
}

// file reads the regular file at path and queues its chunks. It returns the content
// list and the number of bytes it covers (the file may have shrunk since it was
// listed). Errors from the upload pipeline are *fatalError; others concern this file
// only.
func (r *reader) file(ctx context.Context, path string) ([]tree.Extent, int64, error) {
	if hook := r.b.a.beforeRead; hook != nil {
		hook(path)
	}
	if hook := r.b.opts.OnOpen; hook != nil {
		hook(path)
	}
	f, st, err := openRegular(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	size := st.Size
	regions := []region{{0, size, false}}
	if st.Blocks*512 < size {
		regions = dataRegions(f.fd, size)
	}
	var ext []tree.Extent
	var total int64
	for _, rg := range regions {
		if rg.hole {
			ext = addHole(ext, rg.end-rg.start)
			total += rg.end - rg.start
			r.b.bytes.Add(rg.end - rg.start)
			continue
		}
		n, err := r.chunkRange(ctx, f, rg.start, rg.end, &ext)
		total += n
		if err != nil {
			return nil, 0, err
		}
		if n < rg.end-rg.start {
			break // the file shrank
		}
	}
	return ext, total, nil
}

// srcFile is a file the backup reads: a bare descriptor rather than an *os.File. NB:
// os.OpenFile puts each descriptor into non-blocking mode, offers it to the runtime
// poller (which refuses regular files) and puts it back: four fcntl and an epoll_ctl
// per file, half of the system calls of a small file's backup (docs/benchmarks.md,
// 2026-12-06, fourth session). Not safe for concurrent use; Close once.
type srcFile struct {
	fd int
}

// ReadAt reads len(p) bytes at off, fewer only at the end of the file (io.EOF) or on an
// error, as os.File.ReadAt does.
func (f *srcFile) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		k, err := unix.Pread(f.fd, p[n:], off+int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		if k == 0 {
			return n, io.EOF
		}
		n += k
	}
	return n, nil
}

// Close closes the descriptor.
func (f *srcFile) Close() error { return unix.Close(f.fd) }

// openRegular opens path for reading, without following a symlink and without updating
// its access time where that is allowed, and checks that it is (still) a regular file.
// It returns the file and its status at open.
func openRegular(path string) (*srcFile, *unix.Stat_t, error) {
	fd, err := openNoIntr(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME|unix.O_CLOEXEC)
	if errors.Is(err, unix.EPERM) { // O_NOATIME needs ownership
		fd, err = openNoIntr(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	}
	if err != nil {
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	st := new(unix.Stat_t)
	for {
		if err = unix.Fstat(fd, st); !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		err = &fs.PathError{Op: "stat", Path: path, Err: err}
	} else if st.Mode&unix.S_IFMT != unix.S_IFREG {
		err = fmt.Errorf("%s: no longer a regular file", path)
	}
	if err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	return &srcFile{fd: fd}, st, nil
}

// openNoIntr is open(2), retried on EINTR.
func openNoIntr(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// dataRegions maps a file's data and holes with SEEK_DATA/SEEK_HOLE; where the file
// system does not support them the whole file is one data region.
func dataRegions(fd int, size int64) []region {
	var rs []region
	off := int64(0)
	for off < size {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) || (err == nil && d >= size) {
			rs = append(rs, region{off, size, true})
			break
		}
		if err != nil {
			return []region{{0, size, false}}
		}
		if d > off {
			rs = append(rs, region{off, d, true})
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return []region{{0, size, false}}
		}
		h = min(h, size)
		rs = append(rs, region{d, h, false})
		off = h
	}
	return rs
}

// addHole appends n zero bytes as hole extents, merging with a preceding hole.
func addHole(ext []tree.Extent, n int64) []tree.Extent {
	for n > 0 {
		if l := len(ext); l > 0 && ext[l-1].Hole && int64(ext[l-1].Len) < maxHole {
			add := min(n, maxHole-int64(ext[l-1].Len))
			ext[l-1].Len += uint32(add)
			n -= add
			continue
		}
		add := min(n, maxHole)
		ext = append(ext, tree.Extent{Len: uint32(add), Hole: true})
		n -= add
	}
	return ext
}

// chunkRange reads [start, end) of f through the chunker and queues every chunk. It
// returns the bytes consumed (less than end-start if the file ended early).
func (r *reader) chunkRange(ctx context.Context, f *srcFile, start, end int64, ext *[]tree.Extent) (int64, error) {
	buf := r.buf
	filled, pos := 0, 0
	off := start
	eof := false
	var done int64
	for {
		if !eof {
			want := min(int64(len(buf)-filled), end-off)
			if want > 0 {
				n, err := f.ReadAt(buf[filled:filled+int(want)], off)
				r.b.bytesRead.Add(int64(n))
				filled += n
				off += int64(n)
				if err == io.EOF {
					eof = true
				} else if err != nil {
					return done, err
				}
			}
			if off >= end {
				eof = true
			}
		}
		for pos < filled {
			c := r.ch.Cut(buf[pos:filled], eof)
			if c == 0 {
				break
			}
			if err := r.emit(ctx, buf[pos:pos+c], ext); err != nil {
				return done, err
			}
			pos += c
			done += int64(c)
		}
		if eof && pos >= filled {
			return done, nil
		}
		if err := ctx.Err(); err != nil {
			return done, err
		}
		filled = copy(buf, buf[pos:filled])
		pos = 0
	}
}

// emit records one chunk of a file: all-zero chunks become holes, others are hashed and
// queued (emitChunk).
func (r *reader) emit(ctx context.Context, c []byte, ext *[]tree.Extent) error {
	id, err := r.emitChunk(ctx, c)
	if err != nil {
		return err
	}
	if id.IsZero() {
		*ext = addHole(*ext, int64(len(c)))
	} else {
		*ext = append(*ext, tree.Extent{ID: id, Len: uint32(len(c))})
	}
	return nil
}

// emitChunk counts one chunk's bytes and, unless they are all zero (a hole: zero ID),
// hashes and queues it.
func (r *reader) emitChunk(ctx context.Context, c []byte) (chunk.ID, error) {
	r.b.bytes.Add(int64(len(c)))
	if allZero(c) {
		return chunk.ID{}, nil
	}
	id := r.b.a.keys.ChunkID(c)
	data := append(r.b.up.Buffer(len(c)), c...)
	if err := r.b.up.Add(ctx, id, data); err != nil {
		return chunk.ID{}, &fatalError{err}
	}
	return id, nil
}

var zeroPage [16 << 10]byte // immutable: all zeros, only ever read

func allZero(b []byte) bool {
	if len(b) == 0 || b[0] != 0 || b[len(b)-1] != 0 {
		return len(b) == 0
	}
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
