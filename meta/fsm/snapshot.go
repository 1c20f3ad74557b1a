package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/hashicorp/raft"
	sha256 "github.com/minio/sha256-simd"
)

// Snapshot stream format (see meta/FORMAT.md): magic "CFSM", version byte 1, records
// (uvarint key length > 0, key, uvarint value length, value) in key order, a zero key
// length ending the records, the record count (u64 big-endian), and the SHA-256 of every
// preceding byte.
const (
	streamMagic    = "CFSM"
	streamVersion  = 1
	maxKeyLen      = 4 << 10
	maxValueLen    = 64 << 20
	restoreBatchSz = 4 << 20
)

// ErrBadSnapshot marks a snapshot stream that fails to parse or verify.
var ErrBadSnapshot = errors.New("fsm: bad snapshot stream")

// Snapshot captures the current state cheaply (a Pebble snapshot); Persist does the I/O.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	h, err := f.acquire()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{h: h, snap: h.db.NewSnapshot()}, nil
}

type fsmSnapshot struct {
	h    *handle
	snap *pebble.Snapshot
}

// Persist streams every key and value to sink, then closes it (or cancels it on error).
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeStream(sink, s.snap); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	return nil
}

// Release frees the Pebble snapshot.
func (s *fsmSnapshot) Release() {
	_ = s.snap.Close()
	_ = s.h.unref()
}

// WriteTo writes the state as a snapshot stream to w (used by tests and tools to compare
// replicas). It returns the bytes written.
func (f *FSM) WriteTo(w io.Writer) (int64, error) {
	h, err := f.acquire()
	if err != nil {
		return 0, err
	}
	defer func() { _ = h.unref() }()
	snap := h.db.NewSnapshot()
	defer snap.Close()
	cw := &countWriter{w: w}
	err = writeStream(cw, snap)
	return cw.n, err
}

// rewrite copies the live state into a fresh Pebble directory through a snapshot stream
// (WriteTo into Restore) and removes the old directory, whose WAL, memtable-flushed and
// obsolete table files may still hold deleted values: after a purge, the vault's key
// wrappings. Pebble offers no way to scrub them in place (it recycles WAL files, whose
// unwritten tails keep old records, and deletes obsolete tables in the background), and
// the state is small. On error the state is unchanged. It must not run concurrently with
// Apply or Restore (ApplyBatch calls it).
func (f *FSM) rewrite() error {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := f.WriteTo(pw)
		_ = pw.CloseWithError(err)
	}()
	err := f.restore(pr)
	<-done
	if err != nil {
		return fmt.Errorf("fsm: rewrite: %w", err)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeStream(w io.Writer, snap *pebble.Snapshot) error {
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 256<<10)
	bw.WriteString(streamMagic)
	bw.WriteByte(streamVersion)
	it, err := snap.NewIter(nil)
	if err != nil {
		return err
	}
	var count uint64
	var lenBuf [binary.MaxVarintLen64]byte
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return err
		}
		k := it.Key()
		bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(k)))])
		bw.Write(k)
		bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(v)))])
		bw.Write(v)
		count++
	}
	if err := it.Close(); err != nil {
		return err
	}
	bw.WriteByte(0)
	var cnt [8]byte
	binary.BigEndian.PutUint64(cnt[:], count)
	bw.Write(cnt[:])
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(h.Sum(nil))
	return err
}

// Restore replaces the state with the snapshot stream rc (and closes rc). The stream is
// written into a fresh Pebble directory in batches; only after the record count and
// checksum verify is the live state switched to it (atomically, through CURRENT). On any
// error the previous state is unchanged. Restore must not run concurrently with Apply.
// After a successful Restore, Options.OnRestore is called.
func (f *FSM) Restore(rc io.ReadCloser) error {
	if err := f.restore(rc); err != nil {
		return err
	}
	if f.opts.OnRestore != nil {
		f.opts.OnRestore(f.AppliedIndex())
	}
	return nil
}

// restore is Restore without the OnRestore call (rewrite uses it).
func (f *FSM) restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.mu.RLock()
	old := f.mu.h
	f.mu.RUnlock()
	if old == nil {
		return ErrClosed
	}
	name := dbName(old.seq + 1)
	if err := f.removeStale(dbName(old.seq)); err != nil {
		return err
	}
	nh, err := f.openDB(old.seq + 1)
	if err != nil {
		return err
	}
	nh.remove = true // dropped on failure
	if err := readStream(rc, nh.db); err != nil {
		_ = nh.retire(true)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := f.loadMeta(nh.db); err != nil {
		_ = nh.retire(true)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := f.writeCurrent(name); err != nil {
		_ = nh.retire(true)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	nh.remove = false
	f.mu.Lock()
	f.mu.h = nh
	f.mu.Unlock()
	return old.retire(true)
}

type hashReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (r *hashReader) ReadByte() (byte, error) {
	b, err := r.r.ReadByte()
	if err == nil {
		r.h.Write([]byte{b})
	}
	return b, err
}

func (r *hashReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	return n, err
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readStream parses and verifies a snapshot stream, writing its records into db.
func readStream(src io.Reader, db *pebble.DB) error {
	r := &hashReader{r: bufio.NewReaderSize(src, 256<<10), h: sha256.New()}
	hdr := make([]byte, len(streamMagic)+1)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return fmt.Errorf("%w: header: %v", ErrBadSnapshot, unexpected(err))
	}
	if string(hdr[:len(streamMagic)]) != streamMagic {
		return fmt.Errorf("%w: bad magic %q", ErrBadSnapshot, hdr[:len(streamMagic)])
	}
	if hdr[len(streamMagic)] != streamVersion {
		return fmt.Errorf("%w: unsupported version %d (want %d)", ErrBadSnapshot, hdr[len(streamMagic)], streamVersion)
	}
	b := db.NewBatch()
	defer func() { _ = b.Close() }()
	var count uint64
	var prev []byte
	for {
		kl, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("%w: record %d key length: %v", ErrBadSnapshot, count, unexpected(err))
		}
		if kl == 0 {
			break
		}
		if kl > maxKeyLen {
			return fmt.Errorf("%w: record %d: key length %d above %d", ErrBadSnapshot, count, kl, maxKeyLen)
		}
		key := make([]byte, kl)
		if _, err := io.ReadFull(r, key); err != nil {
			return fmt.Errorf("%w: record %d key: %v", ErrBadSnapshot, count, unexpected(err))
		}
		if prev != nil && bytes.Compare(prev, key) >= 0 {
			return fmt.Errorf("%w: record %d: key %q not above %q", ErrBadSnapshot, count, key, prev)
		}
		if !knownKey(string(key)) {
			return fmt.Errorf("%w: record %d: unknown key %q", ErrBadSnapshot, count, key)
		}
		vl, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("%w: record %d value length: %v", ErrBadSnapshot, count, unexpected(err))
		}
		if vl > maxValueLen {
			return fmt.Errorf("%w: record %d: value length %d above %d", ErrBadSnapshot, count, vl, maxValueLen)
		}
		val := make([]byte, vl)
		if _, err := io.ReadFull(r, val); err != nil {
			return fmt.Errorf("%w: record %d value: %v", ErrBadSnapshot, count, unexpected(err))
		}
		if err := b.Set(key, val, nil); err != nil {
			return err
		}
		prev = key
		count++
		if b.Len() >= restoreBatchSz {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			_ = b.Close()
			b = db.NewBatch()
		}
	}
	var cnt [8]byte
	if _, err := io.ReadFull(r, cnt[:]); err != nil {
		return fmt.Errorf("%w: record count: %v", ErrBadSnapshot, unexpected(err))
	}
	if got := binary.BigEndian.Uint64(cnt[:]); got != count {
		return fmt.Errorf("%w: trailer says %d records, stream has %d", ErrBadSnapshot, got, count)
	}
	want := r.h.Sum(nil)
	sum := make([]byte, len(want))
	if _, err := io.ReadFull(r.r, sum); err != nil {
		return fmt.Errorf("%w: checksum: %v", ErrBadSnapshot, unexpected(err))
	}
	if !bytes.Equal(sum, want) {
		return fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the checksum", ErrBadSnapshot)
	}
	// The last commit is synced, which makes every earlier NoSync batch durable too.
	return b.Commit(pebble.Sync)
}

func knownKey(k string) bool {
	switch {
	case knownEnrollKey(k), knownOpsKey(k), knownCertKey(k):
		return true
	case knownJobKey(k), knownApprovalKey(k):
		return true
	case strings.HasPrefix(k, prefixReplication):
		return meta.ValidatePolicyName(k[len(prefixReplication):]) == nil
	case k == keyMap, k == keyApplied, k == keyClock, k == keyClockLimit, k == keyGC:
		return true
	case strings.HasPrefix(k, prefixAudit):
		return len(k) == len(prefixAudit)+16
	case strings.HasPrefix(k, prefixVault):
		return meta.ValidateVaultID(meta.VaultID(k[len(prefixVault):])) == nil
	case strings.HasPrefix(k, prefixSnapshot):
		rest := k[len(prefixSnapshot):]
		i := strings.IndexByte(rest, '/')
		return i > 0 && meta.ValidateVaultID(meta.VaultID(rest[:i])) == nil && len(rest[i+1:]) == 64
	}
	return false
}
