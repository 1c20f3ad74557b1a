package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/memmeta"
	"github.com/cofferhq/coffer/placement"
)

// TestPolicyCompressionNames: a policy may name exactly the compression policies the
// agent's sealer knows.
func TestPolicyCompressionNames(t *testing.T) {
	if !slices.Equal(meta.PolicyCompressions, crypt.CompressionNames) {
		t.Fatalf("meta.PolicyCompressions %v, crypt.CompressionNames %v", meta.PolicyCompressions, crypt.CompressionNames)
	}
}

// TestBackupRunnerCompression: the runner backs a policy up under the policy's
// compression: "off" stores a compressible file as it is, the default ("") and "max"
// compress it; an unknown name fails the run before anything is read.
func TestBackupRunnerCompression(t *testing.T) {
	ctx := context.Background()
	chunks := memstore.NewChunks()
	m := placement.Map{Epoch: 1, PGCount: 1, Profile: placement.DefaultProfile}
	var clock atomic.Int64
	now := func() time.Time { return time.Unix(1_800_000_000+clock.Add(1), 0) }
	svc, err := memmeta.New(memmeta.Config{Chunks: chunks, Map: &m, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	cfg := client.Config{Meta: svc, Chunks: chunks, Host: "web01", Workers: 2, Now: now, Argon2: crypt.TestArgon2Params()}
	pass := []byte("correct horse battery staple")
	if _, err := client.InitVault(ctx, cfg, "v1", pass); err != nil {
		t.Fatal(err)
	}
	ag, err := client.Open(ctx, cfg, "v1", pass)
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	r := BackupRunner{Agent: ag, Vault: "v1"}
	text := bytes.Repeat([]byte("coffer compresses this line under its policy's codec\n"), 20_000) // ~1 MiB
	added := map[string]int64{}
	for i, comp := range []string{"off", "", "max"} {
		dir := filepath.Join(t.TempDir(), "src")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// A distinct file per run: nothing dedups against the run before.
		data := append([]byte{byte('a' + i)}, text...)
		if err := os.WriteFile(filepath.Join(dir, "log.txt"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		o, err := r.Run(ctx, meta.BackupPolicy{Name: "p" + comp, Paths: []string{dir}, Compression: comp})
		if err != nil || o.Status != meta.JobCompleted {
			t.Fatalf("compression %q: %+v %v", comp, o, err)
		}
		added[comp] = o.Stats.BytesAdded
		if comp == "off" && o.Stats.BytesAdded < int64(len(data)) {
			t.Errorf("compression off added %d bytes for a %d-byte file: compressed", o.Stats.BytesAdded, len(data))
		}
		if comp != "off" && o.Stats.BytesAdded*10 > int64(len(data)) {
			t.Errorf("compression %q added %d bytes for a %d-byte repetitive file: not compressed", comp, o.Stats.BytesAdded, len(data))
		}
	}
	t.Logf("bytes added by compression policy: %v", added)
	_, err = r.Run(ctx, meta.BackupPolicy{Name: "bad", Paths: []string{t.TempDir()}, Compression: "brotli"})
	if !errors.Is(err, crypt.ErrUnknownCompression) {
		t.Fatalf("compression brotli: %v, want ErrUnknownCompression", err)
	}
}
