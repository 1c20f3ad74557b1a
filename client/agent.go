package client

import (
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
	// Fetches sizes a restore's chunk reads: max(2, Fetches/2) fetch workers, each
	// with one batched read (up to 64 chunks or 2 MiB) in flight, and Fetches/2 tree
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

// InitVault creates a customer-managed vault with a new random master key wrapped by
// passphrase: InitVaultWith(InitOptions{Passphrase: passphrase}).
func InitVault(ctx context.Context, cfg Config, vault meta.VaultID, passphrase []byte) (meta.Vault, error) {
	return InitVaultWith(ctx, cfg, vault, InitOptions{Passphrase: passphrase})
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
	// ks is the vault's key record and keyring, for key changes (keys.go).
	ks *keyState

	// beforeRead, when set (tests only), runs before a file is opened for reading.
	beforeRead func(path string)
}

// Open opens vault with passphrase: OpenWith(Unlock{Passphrase: passphrase}).
func Open(ctx context.Context, cfg Config, vault meta.VaultID, passphrase []byte) (*Agent, error) {
	return OpenWith(ctx, cfg, vault, Unlock{Passphrase: passphrase})
}

// OpenWith opens vault, unlocking its key as u says (see Unlock). A passphrase that opens
// none of the vault's wraps gives ErrWrongPassphrase; no wrap for this host's key, no
// passphrase or a customer-managed vault for a platform unlock ErrNoWrap. With the local
// key cache on (Config.KeyCacheSecret) a passphrase unlock uses the cache entry when it
// opens and the vault still holds the wrap it stands for, and a key unwrapped from the
// vault is written to it. A vault that is soft-deleted has its cache entry removed and
// never gets one; for a vault that does not exist (purged) everything the agent caches for
// it (key entry and tree packs) is removed.
//
// When a key rotation is due (a host's wrap was removed by a certificate revocation),
// OpenWith performs it before returning, so the agent seals under an epoch the removed
// host never held; a principal that may not rotate (a restore operator) opens the vault
// for reading as it is. An unwrap is recorded as the wrap's last use (at most hourly).
func OpenWith(ctx context.Context, cfg Config, vault meta.VaultID, u Unlock) (*Agent, error) {
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
	var (
		kr        *crypt.Keyring
		fromCache bool
	)
	if v.Keys != nil {
		var wid string
		if kr, wid, fromCache, err = unlockKeyring(ctx, cfg, v, u); err != nil {
			return nil, err
		}
		if kr.Epoch() != v.Keys.Epoch {
			return nil, fmt.Errorf("client: open vault %s: %w: the key wrap holds epochs up to %d, the vault is at %d", vault, ErrInvalid, kr.Epoch(), v.Keys.Epoch)
		}
		ks := &keyState{cfg: cfg, vault: v, kr: kr}
		if v.Keys.RotateBy > v.Keys.Epoch {
			if nv, err := ks.change(ctx, "rotate-key", "due: a holder's wrap was removed (certificate revocation)", true, nil); err == nil {
				cfg.Logger.Info("vault key rotated: a holder's wrap was removed", "vault", vault, "epoch", nv.Keys.Epoch)
				v, kr = nv, ks.kr
			} else if !errors.Is(err, meta.ErrDenied) {
				return nil, fmt.Errorf("client: open vault %s: due key rotation: %w", vault, err)
			}
		}
		if w, ok := v.Keys.Wrap(wid); ok && cfg.Now().Sub(w.LastUsed) >= meta.KeyUseInterval {
			if svc, ok := cfg.Meta.(meta.KeyService); ok {
				if err := svc.TouchKeyWrap(ctx, vault, wid); err != nil {
					cfg.Logger.Debug("key wrap use not recorded", "vault", vault, "wrap", wid, "err", err)
				}
			}
		}
	} else {
		mk, cached, err := openLegacy(cfg, v, u.Passphrase)
		if err != nil {
			return nil, err
		}
		kr, fromCache = crypt.NewKeyring(string(vault), mk), cached
	}
	keys := kr.Keys()
	params, err := chunker.ParseName(v.Chunker)
	if err != nil {
		return nil, fmt.Errorf("client: open vault %s: chunker %q: %w", vault, v.Chunker, err)
	}
	if _, err := chunker.New(params, keys.GearSeed()); err != nil {
		return nil, fmt.Errorf("client: open vault %s: chunker %q: %w", vault, v.Chunker, err)
	}
	return &Agent{cfg: cfg, vault: v, keys: keys, trees: snapshot.New(cfg.Chunks, keys), chunker: params, keyFromCache: fromCache,
		ks: &keyState{cfg: cfg, vault: v, kr: kr}}, nil
}

// openLegacy unwraps the master key of a vault that has only legacy passphrase
// wrappings (Vault.KeyWraps), from the local key cache when it can.
func openLegacy(cfg Config, v meta.Vault, passphrase []byte) (crypt.MasterKey, bool, error) {
	if len(v.KeyWraps) == 0 {
		return crypt.MasterKey{}, false, fmt.Errorf("client: open vault %s: %w: no key wrappings", v.ID, ErrInvalid)
	}
	if len(passphrase) == 0 {
		return crypt.MasterKey{}, false, fmt.Errorf("%w: vault %s has only a passphrase wrapping, and no passphrase was given", ErrNoWrap, v.ID)
	}
	if mk, ok := openKeyCache(cfg, v, passphrase); ok {
		return mk, true, nil
	}
	for i, w := range v.KeyWraps {
		k, err := crypt.UnwrapKey(w, passphrase)
		if errors.Is(err, crypt.ErrWrongPassphrase) {
			continue
		}
		if err != nil {
			return crypt.MasterKey{}, false, fmt.Errorf("client: open vault %s: key wrapping %d: %w", v.ID, i, err)
		}
		saveKeyCache(cfg, v, w, k, passphrase)
		return k, false, nil
	}
	return crypt.MasterKey{}, false, fmt.Errorf("client: open vault %s: %w", v.ID, ErrWrongPassphrase)
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
	return a.derived(cfg, snapshot.New(chunks, a.keys))
}

// derived returns an agent on a's vault and keys with cfg and trees instead of a's.
func (a *Agent) derived(cfg Config, trees *snapshot.Trees) *Agent {
	return &Agent{cfg: cfg, vault: a.vault, keys: a.keys, trees: trees, chunker: a.chunker, keyFromCache: a.keyFromCache, beforeRead: a.beforeRead, ks: a.ks}
}

// withTreeCache returns a copy of a that reads trees through this host's local cache of
// snap's backup set (its host and paths), read only, and the func that releases the
// cache once the copy is done with. Without a cache directory or a pack of that set it
// returns a itself. A restore or listing on the host that backs the set up finds most
// trees there instead of fetching them one level of directories at a time; each is
// verified under its ID like a fetched one (snapshot.OpenCacheReader).
func (a *Agent) withTreeCache(snap meta.Snapshot) (*Agent, func()) {
	c := snapshot.OpenCacheReader(snapshot.CacheConfig{Dir: a.cfg.CacheDir, Vault: a.vault.ID, Host: snap.Host, Paths: snap.Paths,
		Keys: a.keys, Logger: a.cfg.Logger, Now: a.cfg.Now})
	if c == nil {
		return a, func() {}
	}
	return a.derived(a.cfg, a.trees.WithCache(c)), c.Close
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
