package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/client/chunker"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/snapshot"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// Sentinel errors; match with errors.Is.
var (
	// ErrWrongPassphrase: no key wrapping of the vault opens with the passphrase. It
	// wraps crypt.ErrWrongPassphrase, so errors.Is matches either.
	ErrWrongPassphrase = fmt.Errorf("client: %w", crypt.ErrWrongPassphrase)
	// ErrSnapshotNotFound: no snapshot matches a reference.
	ErrSnapshotNotFound = errors.New("client: snapshot not found")
	// ErrAmbiguous: a snapshot ID prefix matches several snapshots.
	ErrAmbiguous = errors.New("client: ambiguous snapshot reference")
	// ErrInvalid: bad arguments (configuration, paths, restore target).
	ErrInvalid = errors.New("client: invalid argument")
	// ErrNotFound: a path does not exist in a snapshot.
	ErrNotFound = errors.New("client: path not found in snapshot")
	// ErrClosed: the Agent was closed.
	ErrClosed = errors.New("client: agent closed")
)

// Config configures InitVault and Open. Zero fields take the defaults named beside them.
type Config struct {
	Meta   meta.Service     // required
	Chunks chunkstore.Store // required
	Host   string           // recorded in snapshots; default os.Hostname()
	Logger *slog.Logger     // default: discard
	// Workers is the number of parallel chunking and sealing goroutines.
	// Default runtime.GOMAXPROCS(0).
	Workers int
	// Fetches sizes a restore's chunk reads: max(2, Fetches/4) fetch workers, each
	// with one batched read (up to 64 chunks or 8 MiB) in flight, and Fetches/2 tree
	// reads prefetched. Reads are bound by round trips
	// (agent → coordinator → k shard nodes), not by CPU, so it is larger than Workers.
	// Default max(16, 4*Workers).
	Fetches int
	// Now is the clock (cmd passes time.Now). Required: this package never reads the
	// wall clock itself.
	Now func() time.Time
	// Argon2 is the passphrase hashing cost for InitVault; zero means
	// crypt.DefaultArgon2Params(). Tests pass crypt.TestArgon2Params().
	Argon2 crypt.Argon2Params
	// Rand is the randomness for keys, salts and snapshot IDs; default crypto/rand.Reader.
	Rand io.Reader
	// CacheDir is the local agent cache (client/snapshot): the trees of each backup set's
	// last snapshot, so that a backup need not download its parent's trees. Empty means
	// no cache. cmd/coffer uses os.UserCacheDir()/coffer.
	CacheDir string
	// KeyCacheSecret, with CacheDir set, enables the local key cache (keycache.go): a
	// host-local secret that, together with the passphrase, seals the vault's master key
	// in CacheDir so that Open need not repeat the vault wrapping's full Argon2id. It is
	// never written anywhere; cmd/coffer passes the agent's TLS private key. Nil
	// disables the key cache.
	KeyCacheSecret []byte
	// MaxEntries bounds the entries List and Restore expand a snapshot (or the part of
	// it they select) to, every occurrence of a shared subtree counted: a larger one is
	// refused with ErrTooManyEntries before anything is listed or written. Default
	// DefaultMaxEntries.
	MaxEntries int64
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Meta == nil:
		return c, fmt.Errorf("%w: config: no meta service", ErrInvalid)
	case c.Chunks == nil:
		return c, fmt.Errorf("%w: config: no chunk store", ErrInvalid)
	case c.Now == nil:
		return c, fmt.Errorf("%w: config: no clock (Now)", ErrInvalid)
	case c.Workers < 0:
		return c, fmt.Errorf("%w: config: negative workers %d", ErrInvalid, c.Workers)
	case c.Fetches < 0:
		return c, fmt.Errorf("%w: config: negative fetches %d", ErrInvalid, c.Fetches)
	case c.MaxEntries < 0:
		return c, fmt.Errorf("%w: config: negative max entries %d", ErrInvalid, c.MaxEntries)
	}
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("client: hostname: %w", err)
		}
		c.Host = h
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Workers == 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.Fetches == 0 {
		c.Fetches = max(16, 4*c.Workers)
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.Argon2 == (crypt.Argon2Params{}) {
		c.Argon2 = crypt.DefaultArgon2Params()
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	return c, nil
}

// InitVault creates vault with a new random master key wrapped by passphrase, the
// default chunker and the default erasure profile. It fails with meta.ErrExists when the
// vault exists (nothing is changed) and with crypt.ErrInvalid for an empty passphrase.
// With the local key cache on, the new key is cached as an Open would cache it, so the
// first backup does not derive the passphrase's key a second time.
func InitVault(ctx context.Context, cfg Config, vault meta.VaultID, passphrase []byte) (meta.Vault, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return meta.Vault{}, err
	}
	if vault == "" {
		return meta.Vault{}, fmt.Errorf("%w: empty vault id", ErrInvalid)
	}
	mk, err := crypt.NewMasterKey(cfg.Rand)
	if err != nil {
		return meta.Vault{}, fmt.Errorf("client: init vault %s: %w", vault, err)
	}
	wrapped, err := crypt.WrapKey(mk, passphrase, cfg.Argon2, cfg.Rand)
	if err != nil {
		return meta.Vault{}, fmt.Errorf("client: init vault %s: %w", vault, err)
	}
	v, err := cfg.Meta.CreateVault(ctx, meta.Vault{
		ID:       vault,
		Profile:  placement.DefaultProfile,
		KeyWraps: [][]byte{wrapped},
		Chunker:  chunker.DefaultParams().Name(),
	})
	if errors.Is(err, meta.ErrExists) {
		// A retried create whose first attempt was committed (its reply lost to a
		// leader change) finds its own vault: the same freshly wrapped key says so.
		if got, gerr := cfg.Meta.GetVault(ctx, vault); gerr == nil && len(got.KeyWraps) == 1 && bytes.Equal(got.KeyWraps[0], wrapped) {
			v, err = got, nil
		}
	}
	if err != nil {
		return meta.Vault{}, fmt.Errorf("client: init vault %s: %w", vault, err)
	}
	saveKeyCache(cfg, v, wrapped, mk, passphrase)
	return v, nil
}

// Agent backs up to and restores from one vault. Its methods are safe for concurrent
// use; each call owns its goroutines and joins them before returning.
type Agent struct {
	cfg     Config
	vault   meta.Vault
	keys    *crypt.Keys
	trees   *snapshot.Trees // no cache: a backup adds its set's
	chunker chunker.Params
	closed  atomic.Bool
	// keyFromCache says the master key came from the local key cache.
	keyFromCache bool

	// beforeRead, when set (tests only), runs before a file is opened for reading.
	beforeRead func(path string)
}

// Open opens vault with passphrase. A passphrase that opens none of the vault's key
// wrappings gives ErrWrongPassphrase. Nothing in the cluster is changed either way; with
// the local key cache on (Config.KeyCacheSecret) the key comes from its entry when that
// opens and the vault still holds the wrapping it stands for, and a key unwrapped from
// the vault is written to it. A vault that is soft-deleted has its cache entry removed and
// never gets one; for a vault that does not exist (purged) everything the agent caches for it
// (key entry and tree packs) is removed.
func Open(ctx context.Context, cfg Config, vault meta.VaultID, passphrase []byte) (*Agent, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	v, err := cfg.Meta.GetVault(ctx, vault)
	if errors.Is(err, meta.ErrNotFound) {
		dropVaultCache(cfg, vault, "the vault does not exist (purged, or never created)")
	}
	if err != nil {
		return nil, fmt.Errorf("client: open vault %s: %w", vault, err)
	}
	if len(v.KeyWraps) == 0 {
		return nil, fmt.Errorf("client: open vault %s: %w: no key wrappings", vault, ErrInvalid)
	}
	mk, opened := openKeyCache(cfg, v, passphrase)
	fromCache := opened
	for i, w := range v.KeyWraps {
		if opened {
			break
		}
		k, err := crypt.UnwrapKey(w, passphrase)
		if errors.Is(err, crypt.ErrWrongPassphrase) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("client: open vault %s: key wrapping %d: %w", vault, i, err)
		}
		mk, opened = k, true
		saveKeyCache(cfg, v, w, mk, passphrase)
	}
	if !opened {
		return nil, fmt.Errorf("client: open vault %s: %w", vault, ErrWrongPassphrase)
	}
	keys := crypt.DeriveKeys(mk)
	params, err := chunker.ParseName(v.Chunker)
	if err != nil {
		return nil, fmt.Errorf("client: open vault %s: chunker %q: %w", vault, v.Chunker, err)
	}
	if _, err := chunker.New(params, keys.GearSeed()); err != nil {
		return nil, fmt.Errorf("client: open vault %s: chunker %q: %w", vault, v.Chunker, err)
	}
	return &Agent{cfg: cfg, vault: v, keys: keys, trees: snapshot.New(cfg.Chunks, keys), chunker: params, keyFromCache: fromCache}, nil
}

// WithChunks returns an agent on the same vault and keys that reads and writes chunks
// through chunks instead of Config.Chunks: a restore operator's agent reads through a
// chunk client carrying its restore grant (chunkrpc.Client.WithGrant), so the grant is a
// value fixed when the agent is made, not state changed under it. a is unchanged; each
// agent is closed on its own. A nil chunks panics.
func (a *Agent) WithChunks(chunks chunkstore.Store) *Agent {
	if chunks == nil {
		panic("client: WithChunks(nil)")
	}
	cfg := a.cfg
	cfg.Chunks = chunks
	return &Agent{cfg: cfg, vault: a.vault, keys: a.keys, trees: snapshot.New(chunks, a.keys), chunker: a.chunker, keyFromCache: a.keyFromCache, beforeRead: a.beforeRead}
}

// Vault returns the vault the agent was opened on.
func (a *Agent) Vault() meta.Vault { return a.vault }

// Close releases the agent. Calls after Close fail with ErrClosed. The agent keeps no
// goroutines between calls, so Close does not wait for anything.
func (a *Agent) Close() error {
	a.closed.Store(true)
	return nil
}

func (a *Agent) check() error {
	if a.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Snapshots returns the vault's snapshots sorted by commit time.
func (a *Agent) Snapshots(ctx context.Context) ([]meta.Snapshot, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	s, err := a.cfg.Meta.ListSnapshots(ctx, a.vault.ID)
	if err != nil {
		return nil, fmt.Errorf("client: list snapshots: %w", err)
	}
	return s, nil
}

// FindSnapshot resolves ref: a full hex snapshot ID, a unique hex prefix of at least 4
// digits, or "latest" (the most recently committed). No match gives ErrSnapshotNotFound,
// several matches ErrAmbiguous; both name ref.
func (a *Agent) FindSnapshot(ctx context.Context, ref string) (meta.Snapshot, error) {
	if err := a.check(); err != nil {
		return meta.Snapshot{}, err
	}
	r := strings.ToLower(strings.TrimSpace(ref))
	if r != "latest" {
		if len(r) < 4 {
			return meta.Snapshot{}, fmt.Errorf("%w: %q: give \"latest\" or at least 4 hex digits of an ID", ErrSnapshotNotFound, ref)
		}
		if len(r) > 64 {
			return meta.Snapshot{}, fmt.Errorf("%w: %q: longer than a snapshot ID", ErrSnapshotNotFound, ref)
		}
		if strings.Trim(r, "0123456789abcdef") != "" {
			return meta.Snapshot{}, fmt.Errorf("%w: %q is not \"latest\" or a hex ID", ErrSnapshotNotFound, ref)
		}
	}
	snaps, err := a.Snapshots(ctx)
	if err != nil {
		return meta.Snapshot{}, err
	}
	if r == "latest" {
		if len(snaps) == 0 {
			return meta.Snapshot{}, fmt.Errorf("%w: %q: the vault %s has no snapshots", ErrSnapshotNotFound, ref, a.vault.ID)
		}
		latest := snaps[0]
		for _, s := range snaps[1:] {
			if !s.Time.Before(latest.Time) {
				latest = s
			}
		}
		return latest, nil
	}
	var found []meta.Snapshot
	for _, s := range snaps {
		if strings.HasPrefix(s.ID.String(), r) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return meta.Snapshot{}, fmt.Errorf("%w: no snapshot ID in vault %s starts with %q", ErrSnapshotNotFound, a.vault.ID, ref)
	case 1:
		return found[0], nil
	}
	ids := make([]string, 0, min(len(found), 4))
	for _, s := range found[:min(len(found), 4)] {
		ids = append(ids, s.ID.String()[:12])
	}
	return meta.Snapshot{}, fmt.Errorf("%w: %q matches %d snapshots (%s…); give more digits", ErrAmbiguous, ref, len(found), strings.Join(ids, ", "))
}
