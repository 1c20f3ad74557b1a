package server

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// TestSealKeyFetchedFromPeer: a meta server without the seal key file (one that joined
// after bootstrap) fetches it from a peer of the Raft configuration the first time it
// needs it and keeps it (0600); a key with another ID than an enrollment names is refused
// from the server's own file and from peers alike.
func TestSealKeyFetchedFromPeer(t *testing.T) {
	var c *cluster
	c = newCluster(t, 3, func(cfg *Config) {
		cfg.SealKeyFile = filepath.Join(cfg.Dir, "seal.key")
		if cfg.ID == addrOf(0) {
			if err := NewSealKeyFile(cfg.SealKeyFile); err != nil {
				t.Fatal(err)
			}
		}
		cfg.PeerSealKey = func(ctx context.Context, id, addr string) ([]byte, error) {
			for _, s := range c.srv {
				if s != nil && s.cfg.ID == id {
					return s.LocalSealKey(ctx)
				}
			}
			return nil, meta.ErrUnavailable
		}
	})
	c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want, err := c.srv[0].LocalSealKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.srv[1].LocalSealKey(ctx); !errors.Is(err, meta.ErrUnavailable) {
		t.Fatalf("m1's own key before fetching: %v, want ErrUnavailable", err)
	}
	if _, err := c.srv[1].clusterSealKey(ctx, "00000000deadbeef"); !errors.Is(err, meta.ErrUnavailable) {
		t.Fatalf("fetching a key of another ID: %v, want ErrUnavailable", err)
	}
	got, err := c.srv[1].clusterSealKey(ctx, SealKeyID(want))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("m1 fetched %x (%v), want m0's key", got, err)
	}
	st, err := os.Stat(c.srv[1].cfg.SealKeyFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("m1's fetched seal key file: %v, mode %v; want 0600", err, st.Mode())
	}
	if k, err := ReadSealKeyFile(c.srv[1].cfg.SealKeyFile); err != nil || !bytes.Equal(k, want) {
		t.Fatalf("m1's seal key file holds %x (%v)", k, err)
	}
	if _, err := c.srv[1].clusterSealKey(ctx, "00000000deadbeef"); !errors.Is(err, meta.ErrUnavailable) {
		t.Fatalf("m1's own key against another ID: %v, want ErrUnavailable", err)
	}
	// A second fetch on m2 may ask m1, which now answers with its copy.
	if got, err := c.srv[2].clusterSealKey(ctx, ""); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("m2 fetched %x (%v), want the cluster's key", got, err)
	}
	if err := WriteSealKeyFile(c.srv[2].cfg.SealKeyFile, want); !errors.Is(err, os.ErrExist) {
		t.Fatalf("writing over an existing seal key file: %v, want ErrExist", err)
	}
}
