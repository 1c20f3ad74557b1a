package snapshot

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"slices"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Pack file constants; the layout is in FORMAT.md.
const (
	packMagic = "CFTPACK1"
	// PackEntrySize is the size of one index entry: ID ‖ offset u64 ‖ length u32.
	PackEntrySize = chunk.Size + 8 + 4
	// PackTrailerSize is the size of the trailer: index offset u64 ‖ count u32 ‖
	// record length u32 ‖ SHA-256 ‖ magic.
	PackTrailerSize = 8 + 4 + 4 + sha256.Size + len(packMagic)
	// packMaxRecord bounds the JSON record (host and paths) a pack may carry.
	packMaxRecord = 1 << 20
	// packReadAll is the largest pack read into memory whole when it is opened (one
	// read instead of one per tree); a larger one is read one tree at a time.
	packReadAll = 64 << 20
)

// setRecord is the JSON record of a pack: the snapshot whose trees it indexes.
type setRecord struct {
	Host     string   `json:"host"`
	Paths    []string `json:"paths"`
	Snapshot string   `json:"snapshot"`
	Tree     string   `json:"tree"`
}

// pack is an open pack file whose trailer, index and record have been checked. Its
// content is in data, or read from f one tree at a time.
type pack struct {
	f     *os.File // nil with data set
	data  []byte
	end   int64 // index offset: entries lie in [len(packMagic), end)
	rec   setRecord
	index []packEntry // sorted by ID
}

// packEntry is one index entry: the sealed tree ID is n bytes at off.
type packEntry struct {
	id  chunk.ID
	off int64
	n   uint32
}

// openPack opens the pack file p and checks its magic, trailer, index and record; a
// pack of at most readAll bytes is read whole and closed. A missing file gives an error
// matching fs.ErrNotExist.
func openPack(p string, readAll int64) (*pack, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	pk, err := readPack(f, readAll)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("snapshot: cache pack %s: %w", p, err)
	}
	if pk.data != nil {
		f.Close()
	}
	return pk, nil
}

func readPack(f *os.File, readAll int64) (*pack, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < int64(len(packMagic)+PackTrailerSize) {
		return nil, fmt.Errorf("truncated: %d bytes", size)
	}
	pk := &pack{f: f}
	if size <= readAll {
		pk.data = make([]byte, size)
		if _, err := io.ReadFull(f, pk.data); err != nil {
			return nil, err
		}
		pk.f = nil
	}
	head := make([]byte, len(packMagic))
	if err := pk.readAt(head, 0); err != nil {
		return nil, err
	}
	tr := make([]byte, PackTrailerSize)
	if err := pk.readAt(tr, size-int64(PackTrailerSize)); err != nil {
		return nil, err
	}
	if string(head) != packMagic || string(tr[PackTrailerSize-len(packMagic):]) != packMagic {
		return nil, errors.New("bad magic")
	}
	be := binary.BigEndian
	idxOff, count, recLen := be.Uint64(tr[0:]), be.Uint32(tr[8:]), be.Uint32(tr[12:])
	body := uint64(size - int64(PackTrailerSize))
	idxLen := uint64(count) * PackEntrySize
	if idxOff < uint64(len(packMagic)) || idxOff > body || recLen > packMaxRecord || idxLen+uint64(recLen) != body-idxOff {
		return nil, fmt.Errorf("bad trailer: index at %d, %d entries, record of %d bytes in %d bytes", idxOff, count, recLen, size)
	}
	buf := make([]byte, idxLen+uint64(recLen))
	if err := pk.readAt(buf, int64(idxOff)); err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(buf); string(sum[:]) != string(tr[16:16+sha256.Size]) {
		return nil, errors.New("index checksum mismatch")
	}
	pk.end, pk.index = int64(idxOff), make([]packEntry, count)
	for i := range pk.index {
		b := buf[i*PackEntrySize:]
		e := &pk.index[i]
		copy(e.id[:], b[:chunk.Size])
		e.off, e.n = int64(be.Uint64(b[chunk.Size:])), be.Uint32(b[chunk.Size+8:])
		if e.off < int64(len(packMagic)) || e.n == 0 || e.off+int64(e.n) > pk.end {
			return nil, fmt.Errorf("index entry %d out of bounds", i)
		}
		if i > 0 && !pk.index[i-1].id.Less(e.id) {
			return nil, fmt.Errorf("index entry %d out of order", i)
		}
	}
	if err := json.Unmarshal(buf[idxLen:], &pk.rec); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	return pk, nil
}

// readAt fills b from offset off, which the caller has checked against the size.
func (p *pack) readAt(b []byte, off int64) error {
	if p.data != nil {
		copy(b, p.data[off:])
		return nil
	}
	_, err := p.f.ReadAt(b, off)
	return err
}

// read returns the sealed tree id from the pack, or an error matching fs.ErrNotExist
// when the index does not name it. The result must not be modified.
func (p *pack) read(id chunk.ID) ([]byte, error) {
	i, ok := slices.BinarySearchFunc(p.index, id, func(e packEntry, id chunk.ID) int { return bytes.Compare(e.id[:], id[:]) })
	if !ok {
		return nil, fs.ErrNotExist
	}
	e := p.index[i]
	if p.data != nil {
		return p.data[e.off : e.off+int64(e.n) : e.off+int64(e.n)], nil
	}
	b := make([]byte, e.n)
	if _, err := p.f.ReadAt(b, e.off); err != nil {
		return nil, err
	}
	return b, nil
}

func (p *pack) close() {
	if p.f != nil {
		_ = p.f.Close()
	}
}

// packWriter writes the next pack of a set into a temporary file.
type packWriter struct {
	f     *os.File
	w     *bufio.Writer
	off   int64
	spans map[chunk.ID]packEntry
}

func newPackWriter(dir string) (*packWriter, error) {
	f, err := os.CreateTemp(dir, ".tmp-pack-*")
	if err != nil {
		return nil, err
	}
	w := &packWriter{f: f, w: bufio.NewWriterSize(f, 64<<10), spans: make(map[chunk.ID]packEntry)}
	if _, err := w.w.WriteString(packMagic); err != nil {
		w.abort()
		return nil, err
	}
	w.off = int64(len(packMagic))
	return w, nil
}

func (w *packWriter) has(id chunk.ID) bool {
	_, ok := w.spans[id]
	return ok
}

// add appends sealed as tree id unless the pack holds id already.
func (w *packWriter) add(id chunk.ID, sealed []byte) error {
	if w.has(id) || len(sealed) == 0 {
		return nil
	}
	if uint64(len(sealed)) > math.MaxUint32 {
		return fmt.Errorf("tree %s: %d bytes", id.Str(), len(sealed))
	}
	if _, err := w.w.Write(sealed); err != nil {
		return err
	}
	w.spans[id] = packEntry{id: id, off: w.off, n: uint32(len(sealed))}
	w.off += int64(len(sealed))
	return nil
}

// finish writes the index of the trees among ids that the pack holds, the record and
// the trailer, and renames the file to p. It returns how many of ids it does not hold.
// The writer is unusable afterwards.
func (w *packWriter) finish(p string, rec setRecord, ids []chunk.ID) (missing int, err error) {
	defer func() {
		if err != nil {
			w.abort()
		}
	}()
	index := make([]packEntry, 0, len(ids))
	seen := make(map[chunk.ID]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		if e, ok := w.spans[id]; ok {
			index = append(index, e)
		} else {
			missing++
		}
	}
	slices.SortFunc(index, func(x, y packEntry) int { return bytes.Compare(x.id[:], y.id[:]) })
	recJSON, err := json.Marshal(rec)
	if err != nil {
		return missing, err
	}
	if len(recJSON) > packMaxRecord {
		return missing, fmt.Errorf("record of %d bytes", len(recJSON))
	}
	be := binary.BigEndian
	sum := sha256.New()
	out := io.MultiWriter(w.w, sum)
	var e [PackEntrySize]byte
	for _, x := range index {
		copy(e[:], x.id[:])
		be.PutUint64(e[chunk.Size:], uint64(x.off))
		be.PutUint32(e[chunk.Size+8:], x.n)
		if _, err := out.Write(e[:]); err != nil {
			return missing, err
		}
	}
	if _, err := out.Write(recJSON); err != nil {
		return missing, err
	}
	tr := make([]byte, 0, PackTrailerSize)
	tr = be.AppendUint64(tr, uint64(w.off))
	tr = be.AppendUint32(tr, uint32(len(index)))
	tr = be.AppendUint32(tr, uint32(len(recJSON)))
	tr = sum.Sum(tr)
	tr = append(tr, packMagic...)
	if _, err := w.w.Write(tr); err != nil {
		return missing, err
	}
	if err := w.w.Flush(); err != nil {
		return missing, err
	}
	if err := w.f.Close(); err != nil {
		return missing, err
	}
	if err := os.Rename(w.f.Name(), p); err != nil {
		return missing, err
	}
	return missing, nil
}

// abort closes and removes the temporary file.
func (w *packWriter) abort() {
	_ = w.f.Close()
	_ = os.Remove(w.f.Name())
}
