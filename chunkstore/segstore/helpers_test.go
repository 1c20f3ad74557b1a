package segstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

func tid(n int) chunk.ID {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	return chunk.ID(sha256.Sum256(append([]byte("segstore-test-"), b[:]...)))
}

func mkShard(n int, idx uint8, size int) chunkstore.Shard {
	r := rand.New(rand.NewPCG(uint64(n), uint64(idx)))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return chunkstore.Shard{
		Key:  chunkstore.ShardKey{ID: tid(n), Index: idx},
		Meta: chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: uint32(4 * size), ChunkCRC: uint32(n), Writer: "agent/test"},
		Data: data,
	}
}

func mustOpen(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

func mustClose(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func mustPut(t *testing.T, s *Store, shards ...chunkstore.Shard) {
	t.Helper()
	if err := s.PutShards(context.Background(), shards); err != nil {
		t.Fatalf("PutShards: %v", err)
	}
}

func mustDelete(t *testing.T, s *Store, keys ...chunkstore.ShardKey) {
	t.Helper()
	if err := s.DeleteShards(context.Background(), keys); err != nil {
		t.Fatalf("DeleteShards: %v", err)
	}
}

// expectShard checks that want reads back intact.
func expectShard(t *testing.T, s *Store, want chunkstore.Shard) {
	t.Helper()
	got, err := s.GetShard(context.Background(), want.Key)
	if err != nil {
		t.Fatalf("GetShard(%s): %v", keyStr(want.Key), err)
	}
	if got.Meta != want.Meta || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("GetShard(%s): got meta %+v and %d bytes, want meta %+v and %d bytes", keyStr(want.Key), got.Meta, len(got.Data), want.Meta, len(want.Data))
	}
}

func expectMissing(t *testing.T, s *Store, key chunkstore.ShardKey) {
	t.Helper()
	if _, err := s.GetShard(context.Background(), key); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("GetShard(%s) = %v, want ErrNotFound", keyStr(key), err)
	}
}

func stats(t *testing.T, s *Store) chunkstore.ShardStats {
	t.Helper()
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

// snapshot captures everything observable about the index, to compare a store before
// and after recovery.
type snapshot struct {
	infos    []chunkstore.ShardInfo
	shards   int64
	bytes    int64
	segments []SegmentInfo
}

func takeSnapshot(t *testing.T, s *Store) snapshot {
	t.Helper()
	var sn snapshot
	if err := s.EnumerateShards(context.Background(), nil, func(i chunkstore.ShardInfo) error {
		sn.infos = append(sn.infos, i)
		return nil
	}); err != nil {
		t.Fatalf("EnumerateShards: %v", err)
	}
	st := stats(t, s)
	sn.shards, sn.bytes = st.Shards, st.Bytes
	segs, err := s.Segments()
	if err != nil {
		t.Fatal(err)
	}
	sn.segments = segs
	return sn
}

func (a snapshot) equal(b snapshot) bool {
	return slices.Equal(a.infos, b.infos) && a.shards == b.shards && a.bytes == b.bytes && slices.Equal(a.segments, b.segments)
}

// flipByte inverts one byte of a file in place.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// faults injects errors into segment file writes and syncs.
type faults struct {
	failWrite atomic.Bool // WriteAt writes half the bytes, then fails with ENOSPC
	failSync  atomic.Bool // Sync fails with EIO
	// syncGate, when set, is received from before each Sync; the value sent decides
	// whether that Sync fails (a closed gate lets every Sync through).
	syncGate atomic.Pointer[chan bool]
	syncs    atomic.Int64
}

type faultFile struct {
	*os.File
	f *faults
}

func (ff faultFile) WriteAt(b []byte, off int64) (int, error) {
	if ff.f.failWrite.Load() {
		n, _ := ff.File.WriteAt(b[:len(b)/2], off)
		return n, &os.PathError{Op: "write", Path: ff.Name(), Err: syscall.ENOSPC}
	}
	return ff.File.WriteAt(b, off)
}

func (ff faultFile) Sync() error {
	ff.f.syncs.Add(1)
	if g := ff.f.syncGate.Load(); g != nil {
		if fail := <-*g; fail {
			return &os.PathError{Op: "sync", Path: ff.Name(), Err: syscall.EIO}
		}
	}
	if ff.f.failSync.Load() {
		return &os.PathError{Op: "sync", Path: ff.Name(), Err: syscall.EIO}
	}
	return ff.File.Sync()
}

func (f *faults) opener() func(string, int, os.FileMode) (segFile, error) {
	return func(path string, flag int, perm os.FileMode) (segFile, error) {
		file, err := os.OpenFile(path, flag, perm)
		if err != nil {
			return nil, err
		}
		return faultFile{File: file, f: f}, nil
	}
}
