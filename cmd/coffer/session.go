package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
)

// connectTimeout bounds fetching the cluster map, so that an unreachable cluster is
// reported instead of waited on forever.
const connectTimeout = 30 * time.Second

// session is one connection to the cluster: the QUIC endpoint, the meta and chunk
// clients, the cluster map they were built from, and the agent configuration. Close
// releases everything.
type session struct {
	cfg        clientconfig.File
	vault      meta.VaultID
	logger     *slog.Logger
	endpoint   *cquic.Endpoint
	caller     transport.Caller
	meta       *metarpc.Client
	chunks     *chunkrpc.Client
	clusterMap placement.Map
	chunkAddrs []string
	agent      client.Config
	role       transport.Role // the certificate's role
	principal  string         // the certificate's name
	// platformUnlock opens the vault through the platform key (restore --platform).
	platformUnlock bool
}

// hostKey loads this host's own key pair (host_key in the client configuration; nil
// when none is configured).
func (s *session) hostKey() (*crypt.Identity, error) {
	if s.cfg.HostKey == "" {
		return nil, nil
	}
	b, err := os.ReadFile(s.cfg.HostKey)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	id, err := crypt.ParseIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", s.cfg.HostKey, err)
	}
	return id, nil
}

// connect builds a session: load config → identity → endpoint → meta client → cluster map
// → chunk client → client.Config. On error nothing stays open.
func connect(ctx context.Context, a *app) (*session, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	s := &session{cfg: cfg, vault: a.vaultID(cfg), logger: a.logger()}
	id, err := pki.LoadIdentity(cfg.CA, cfg.Cert, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	s.role, s.principal = id.Role(), id.Principal()
	ep, err := cquic.New(cquic.Config{Identity: id, Logger: s.logger})
	if err != nil {
		return nil, fmt.Errorf("open endpoint: %w", err)
	}
	s.endpoint, s.caller = ep, ep
	s.meta = metarpc.NewClient(ep, cfg.Meta)
	mctx, cancel := context.WithTimeout(ctx, connectTimeout)
	m, err := s.meta.ClusterMap(mctx)
	if err == nil {
		// The configured addresses are seeds: follow the meta group as it is now (meta
		// add|remove). A group that cannot say keeps the seeds.
		_, _ = s.meta.RefreshServers(mctx)
	}
	cancel()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("fetch cluster map from %s: %w", joinPaths(cfg.Meta), err)
	}
	s.clusterMap = m
	s.chunkAddrs = chunkAddrs(m)
	s.chunks = chunkrpc.NewClient(ep, s.chunkAddrs)
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	s.agent = client.Config{
		Meta:   s.meta,
		Chunks: s.chunks,
		Host:   host,
		Logger: s.logger,
		Now:    a.now,
		Argon2: crypt.DefaultArgon2Params(),
		Rand:   rand.Reader,
	}
	if a.tune != nil {
		// NB: the CPUs the process may use, not GOMAXPROCS, which an upload raises by a
		// spare P for the network (sched.go).
		s.agent.Workers = a.tune.cpus
	}
	return s, nil
}

// useCache sets the agent's local cache directory (trees of the last snapshots) and,
// when dir is not empty, turns on its key cache with this client's TLS private key as
// the host-local secret: an entry in dir then opens only with the passphrase and that
// key (client.Config.KeyCacheSecret). A key file that cannot be read leaves the key
// cache off.
func (s *session) useCache(dir string) {
	s.agent.CacheDir = dir
	if dir == "" {
		return
	}
	key, err := os.ReadFile(s.cfg.Key)
	if err != nil {
		s.logger.Warn("local key cache off: client key unreadable", "file", s.cfg.Key, "err", err)
		return
	}
	s.agent.KeyCacheSecret = key
}

// needChunks reports a clear error when the cluster map offers no chunk node to talk to.
func (s *session) needChunks() error {
	if len(s.chunkAddrs) == 0 {
		return fmt.Errorf("cluster map (epoch %d) lists no usable chunk nodes", s.clusterMap.Epoch)
	}
	return nil
}

// Close releases the clients and the endpoint. It is safe on a partly built session.
func (s *session) Close() error {
	var errs []error
	var closers []any
	if s.chunks != nil {
		closers = append(closers, s.chunks)
	}
	if s.meta != nil {
		closers = append(closers, s.meta)
	}
	for _, c := range closers {
		// The rpc clients hold no resources of their own today; close them if they do.
		if cl, ok := c.(io.Closer); ok {
			errs = append(errs, cl.Close())
		}
	}
	if s.endpoint != nil {
		errs = append(errs, s.endpoint.Close())
	}
	return errors.Join(errs...)
}

// chunkAddrs returns the RPC addresses of the map's nodes that can coordinate chunk
// reads and writes: every node that is not down, out or decommissioned, in map order.
func chunkAddrs(m placement.Map) []string {
	var out []string
	for _, n := range m.Nodes {
		switch n.State {
		case placement.StateDown, placement.StateOut, placement.StateDecommissioned:
			continue
		}
		if n.Addr != "" {
			out = append(out, n.Addr)
		}
	}
	return out
}

// logger returns the slog logger for library diagnostics: warnings (such as each file a
// backup skips) as "coffer: warning: ..." lines on stderr, errors only with --quiet;
// with --log-format json, one JSON object per line instead (component "coffer").
// Command output never goes through it.
func (a *app) logger() *slog.Logger {
	level := slog.LevelWarn
	if a.g.quiet {
		level = slog.LevelError
	}
	if a.g.logFormat == logFormatJSON {
		return slog.New(slog.NewJSONHandler(a.stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: redactSecrets})).
			With("component", "coffer")
	}
	return slog.New(newCLIHandler(a.stderr, level))
}

// openAgent connects and opens the vault with its passphrase; each of opts may adjust
// the session's agent configuration first. The caller closes both the agent and the
// session.
func openAgent(ctx context.Context, a *app, opts ...func(*session)) (*session, *client.Agent, error) {
	s, err := connect(ctx, a)
	if err != nil {
		return nil, nil, err
	}
	if err := s.needChunks(); err != nil {
		s.Close()
		return nil, nil, err
	}
	for _, o := range opts {
		o(s)
	}
	// This host's own key (or the platform key) first; the passphrase when the vault
	// holds no wrap for them.
	var u client.Unlock
	u.Platform = s.platformUnlock
	if u.Identity, err = s.hostKey(); err != nil {
		s.Close()
		return nil, nil, err
	}
	// The vault's KMS wraps next (a host without the wrap's plugin skips them).
	u.KMS = s.kmsResolver(a)
	ag, err := client.OpenWith(ctx, s.agent, s.vault, u)
	if isKMSRefusal(err) && !u.Platform {
		// The KMS refused (a disabled key): a passphrase given without asking, or typed
		// at the terminal, may still open the vault; without one the KMS's refusal is
		// the answer.
		if pass, perr := a.passphrase(ctx, false); perr == nil {
			fmt.Fprintf(a.stderr, "coffer: %s; opening vault %q with the passphrase\n", errorMessage(err), s.vault)
			u.Passphrase = pass
			ag, err = client.OpenWith(ctx, s.agent, s.vault, u)
			clear(pass)
		}
	} else if errors.Is(err, client.ErrNoWrap) && !u.Platform {
		pass, perr := a.passphrase(ctx, false)
		if perr != nil {
			s.Close()
			return nil, nil, perr
		}
		u.Passphrase = pass
		ag, err = client.OpenWith(ctx, s.agent, s.vault, u)
		clear(pass)
	}
	if err != nil {
		s.Close()
		switch {
		case errors.Is(err, client.ErrWrongPassphrase):
			return nil, nil, plainf(err, "wrong passphrase for vault %q", s.vault)
		case errors.Is(err, meta.ErrNotFound):
			return nil, nil, plainf(err, "vault %q does not exist (create it with \"coffer init\")", s.vault)
		case errors.Is(err, client.ErrNoWrap), errors.Is(err, meta.ErrDenied), errors.Is(err, meta.ErrInvalid) && u.Platform,
			isKMSRefusal(err):
			return nil, nil, plainf(err, "open vault %q: %s", s.vault, errorMessage(err))
		}
		return nil, nil, fmt.Errorf("open vault %q: %w", s.vault, err)
	}
	return s, ag, nil
}

// grantFor returns ag for reading snap: when the session's certificate is a restore
// operator's (chunk nodes serve such peers only through a grant for one snapshot), an
// agent whose chunk reads carry a restore grant for snap; other roles read with their own
// rights and get ag itself.
func (s *session) grantFor(ctx context.Context, ag *client.Agent, snap meta.Snapshot) (*client.Agent, error) {
	r, _, err := s.readerFor(ctx, ag, snap)
	return r, err
}

// readerFor is grantFor that also returns how long the reader's access lasts from
// when it was asked for: the grant's lifetime (grant.MaxTTL, which the leader grants
// exactly), or zero for a reader that needs no grant.
func (s *session) readerFor(ctx context.Context, ag *client.Agent, snap meta.Snapshot) (*client.Agent, time.Duration, error) {
	if s.role != transport.RoleRestore {
		return ag, 0, nil
	}
	tok, _, err := s.meta.IssueGrant(ctx, snap.Vault, snap.ID, grant.MaxTTL)
	if err != nil {
		return nil, 0, retentionErr(err, "obtain a restore grant for snapshot %s", snap.ID.Str())
	}
	return ag.WithChunks(s.chunks.WithGrant(tok)), grant.MaxTTL, nil
}

// openSnapshot opens the vault and resolves ref (an ID, a unique prefix or "latest") to
// a snapshot the caller may read: for a restore-operator certificate it also obtains the
// restore grant the chunk nodes ask for. opts adjust the session before the vault is
// opened (as openAgent's). done releases the agent and the connection.
func openSnapshot(ctx context.Context, a *app, ref string, opts ...func(*session)) (ag *client.Agent, snap meta.Snapshot, done func(), err error) {
	s, ag, err := openAgent(ctx, a, opts...)
	if err != nil {
		return nil, meta.Snapshot{}, nil, err
	}
	var reader *client.Agent // ag, or ag reading through a restore grant
	done = func() {
		if reader != nil && reader != ag {
			reader.Close()
		}
		ag.Close()
		s.Close()
	}
	if snap, err = ag.FindSnapshot(ctx, ref); err == nil {
		reader, err = s.grantFor(ctx, ag, snap)
	}
	if err != nil {
		done()
		return nil, meta.Snapshot{}, nil, err
	}
	return reader, snap, done, nil
}
