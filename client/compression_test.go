package client

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/client/crypt"
)

// envelopeStore records the compression byte (envelope offset 6) of every chunk put.
type envelopeStore struct {
	chunkstore.Store
	mu    sync.Mutex
	codes map[byte]int
	sizes []int
}

func (e *envelopeStore) Put(ctx context.Context, cs []chunkstore.Chunk) error {
	e.mu.Lock()
	for _, c := range cs {
		e.codes[c.Data[6]]++
		e.sizes = append(e.sizes, len(c.Data))
	}
	e.mu.Unlock()
	return e.Store.Put(ctx, cs)
}

// TestBackupCompressionPolicies: each --compression policy seals file chunks with its
// codec, and every snapshot restores byte for byte without being told the policy.
func TestBackupCompressionPolicies(t *testing.T) {
	ctx := context.Background()
	text := []byte(strings.Repeat("func (c *compressor) encode(dst, src []byte) []byte { return nil }\n", 16<<10)) // ~1 MiB
	for _, p := range []crypt.Compression{crypt.CompressionAuto, crypt.CompressionFast, crypt.CompressionMax, crypt.CompressionOff} {
		t.Run(p.String(), func(t *testing.T) {
			st := &envelopeStore{Store: memstore.NewChunks(), codes: map[byte]int{}}
			e := newEnvStore(t, st)
			a := e.open(t)
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			writeFile(t, filepath.Join(src, "code.go"), text, 0o644)
			writeFile(t, filepath.Join(src, "random.bin"), randBytes(9, 1<<20), 0o644)
			res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}, Compression: p})
			if err != nil {
				t.Fatal(err)
			}
			st.mu.Lock()
			codes, sizes := st.codes, st.sizes
			st.mu.Unlock()
			switch p {
			case crypt.CompressionFast:
				if codes[2] == 0 {
					t.Errorf("fast stored no S2 envelope: %v", codes)
				}
			case crypt.CompressionOff:
				if codes[2] != 0 {
					t.Errorf("off stored S2 envelopes: %v", codes)
				}
				found := false
				for _, n := range sizes {
					found = found || n == len(text)+crypt.Overhead
				}
				if !found {
					t.Errorf("off: no envelope holds the text file uncompressed (sizes %v)", sizes)
				}
			default:
				if codes[2] != 0 || codes[1] == 0 {
					t.Errorf("%s: codes %v, want zstd only", p, codes)
				}
			}
			target := filepath.Join(dir, "restore")
			if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target}); err != nil {
				t.Fatal(err)
			}
			for name, want := range map[string][]byte{"code.go": text, "random.bin": randBytes(9, 1<<20)} {
				got, err := os.ReadFile(filepath.Join(target, "src", name))
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("%s restored %d bytes (err %v), want %d", name, len(got), err, len(want))
				}
			}
		})
	}
}
