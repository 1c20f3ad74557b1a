package server

import (
	"fmt"
	"net"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/raftlayer"
	"github.com/hashicorp/raft"
)

// Meta authority: who may speak Raft to this server and act on a principal's behalf.
//
// A peer has meta authority toward this server when its certificate has the meta role
// (transport.RoleMeta) and its principal (the certificate's common name, which is the
// server's node ID and Raft server ID) is a server, voter or not, in this server's latest
// Raft configuration. A server whose configuration is still empty (never bootstrapped,
// waiting for a leader to add it) grants it to any meta certificate, since it knows no
// servers yet; chunk-node, agent and admin certificates never have it.
//
// The Raft stream layer (gateLayer) admits only such peers, so AppendEntries,
// RequestVote, TimeoutNow and InstallSnapshot (an FSM snapshot) from anyone else are
// refused before Raft reads a byte; metarpc honours a delegated principal or a forwarded
// request only from such peers (metarpc.Authority).

// IsServer reports whether id is a server (voter or non-voter) in this server's latest
// Raft configuration. It is cheap (raft keeps that configuration in an atomic value) and
// safe for concurrent use; false until raft has started.
func (s *Server) IsServer(id string) bool {
	r := s.started.Load()
	if r == nil {
		return false
	}
	conf, ok := latestConfiguration(r)
	return ok && inConfiguration(conf, id)
}

// CheckMetaPeer returns nil when peer has meta authority toward this server (see the
// rule above), else an error wrapping meta.ErrDenied that names the rule broken. Safe for
// concurrent use; every peer is refused until raft has started.
func (s *Server) CheckMetaPeer(peer transport.Peer) error {
	if peer.Role != transport.RoleMeta {
		return fmt.Errorf("%w: %s %q is not a meta server (only a %q certificate of a server in the current Raft configuration has meta authority)",
			meta.ErrDenied, peer.Role, peer.Principal, transport.RoleMeta)
	}
	r := s.started.Load()
	if r == nil {
		return fmt.Errorf("%w: meta server %q: raft has not started on %s yet", meta.ErrDenied, peer.Principal, s.cfg.ID)
	}
	conf, ok := latestConfiguration(r)
	if !ok || len(conf.Servers) == 0 {
		return nil // not bootstrapped yet: any meta server may add this one
	}
	if !inConfiguration(conf, peer.Principal) {
		return fmt.Errorf("%w: meta server %q is not in the current Raft configuration of %s", meta.ErrDenied, peer.Principal, s.cfg.ID)
	}
	return nil
}

// latestConfiguration is raft's latest configuration (committed or not).
func latestConfiguration(r *raft.Raft) (raft.Configuration, bool) {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return raft.Configuration{}, false
	}
	return f.Configuration(), true
}

func inConfiguration(conf raft.Configuration, id string) bool {
	for _, sv := range conf.Servers {
		if string(sv.ID) == id {
			return true
		}
	}
	return false
}

// gateLayer is the server's Raft stream layer: cfg.Layer, admitting only streams from
// peers with meta authority (CheckMetaPeer). A refused stream is closed unread and
// logged with the peer and the reason.
type gateLayer struct {
	raft.StreamLayer
	s *Server
}

// Accept returns the next stream of a peer with meta authority.
func (g gateLayer) Accept() (net.Conn, error) {
	for {
		c, err := g.StreamLayer.Accept()
		if err != nil {
			return nil, err
		}
		p, ok := raftlayer.PeerOf(c)
		if !ok {
			err = fmt.Errorf("%w: the stream names no verified certificate", meta.ErrDenied)
		} else {
			err = g.s.CheckMetaPeer(p)
		}
		if err == nil {
			return c, nil
		}
		g.s.log.Warn("raft stream refused", "peer", p.Principal, "role", p.Role, "addr", c.RemoteAddr(), "err", err)
		c.Close()
	}
}
