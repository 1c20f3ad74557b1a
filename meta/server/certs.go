package server

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/hashicorp/raft"
)

var _ meta.CertService = (*Server)(nil)

// raftIDs returns the IDs of every server of the Raft configuration.
func (s *Server) raftIDs() ([]string, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, s.raftErr(err)
	}
	var ids []string
	for _, srv := range f.Configuration().Servers {
		ids = append(ids, string(srv.ID))
	}
	return ids, nil
}

// raftServers returns the servers of the Raft configuration.
func (s *Server) raftServers() ([]meta.Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, s.raftErr(err)
	}
	var out []meta.Server
	for _, srv := range f.Configuration().Servers {
		out = append(out, meta.Server{ID: string(srv.ID), Addr: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
	}
	return out, nil
}

// CreateNodeToken implements meta.CertService: like CreateEnrollToken, the leader draws
// the token and the log keeps only its hash.
func (s *Server) CreateNodeToken(ctx context.Context, role, id, domain string, ttl time.Duration) (string, meta.EnrollToken, error) {
	if err := s.leaderWrite(); err != nil {
		return "", meta.EnrollToken{}, err
	}
	if ttl == 0 {
		ttl = meta.DefaultEnrollTTL
	}
	taken, err := s.raftIDs()
	if err != nil {
		return "", meta.EnrollToken{}, err
	}
	tok, err := meta.NewEnrollToken()
	if err != nil {
		return "", meta.EnrollToken{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.CreateNodeToken{Hash: meta.EnrollTokenHash(tok), Role: role, ID: id, Domain: domain,
		TTL: int64(ttl), By: meta.PrincipalFrom(ctx), Taken: taken})
	if err != nil {
		return "", meta.EnrollToken{}, fmt.Errorf("server: create node join token: %w", err)
	}
	return tok, res.(meta.EnrollToken), nil
}

// issuer returns the issuing CA this server signs with, or ErrUnavailable saying how
// to give it one.
func (s *Server) issuer(what string) (*pki.CA, error) {
	if s.cfg.CA == nil {
		return nil, fmt.Errorf("%w: server: meta server %s holds no issuing CA, so it cannot %s (sign its issuer.csr on the CA host with cofferd ca sign --role issuer, put issuer.pem in its data directory and restart it; or ask a meta server that holds one)",
			meta.ErrUnavailable, s.cfg.ID, what)
	}
	return s.cfg.CA, nil
}

// signAndRecord signs a certificate for pub with this server's issuer and records it in
// the log. A failure to record is logged and not returned: the certificate exists (its
// token, if any, is spent) and the holder needs it.
func (s *Server) signAndRecord(ctx context.Context, ca *pki.CA, pub crypto.PublicKey, serial *big.Int, req pki.IssueRequest, issued time.Time, how, by, renews string) ([]byte, meta.IssuedCert, error) {
	cert, err := ca.Sign(pub, serial, req, issued)
	if err != nil {
		return nil, meta.IssuedCert{}, fmt.Errorf("server: sign %s: %w", req.CommonName, err)
	}
	info, err := pki.ParseCertInfo(cert)
	if err != nil {
		return nil, meta.IssuedCert{}, fmt.Errorf("server: sign %s: %w", req.CommonName, err)
	}
	rec := meta.IssuedCert{Serial: info.Serial, Principal: info.Principal, Role: info.Role, Vaults: req.Vaults,
		NotBefore: info.NotBefore, NotAfter: info.NotAfter, Issuer: s.cfg.ID, How: how, By: by, Renews: renews}
	res, err := s.propose(timeoutOf(ctx), command.RecordCert{Cert: rec})
	if err != nil {
		s.log.Error("certificate signed but not recorded", "principal", rec.Principal, "serial", rec.Serial, "err", err)
		return cert, rec, nil
	}
	return cert, res.(meta.IssuedCert), nil
}

// JoinNode implements meta.CertService. As in Enroll, the token is consumed in the log
// first, with the serial the certificate will carry; only then is it signed.
func (s *Server) JoinNode(ctx context.Context, req meta.NodeJoinRequest) (meta.NodeJoinResult, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.NodeJoinResult{}, err
	}
	ca, err := s.issuer("join nodes")
	if err != nil {
		return meta.NodeJoinResult{}, err
	}
	if s.cfg.JoinInfo == nil {
		return meta.NodeJoinResult{}, fmt.Errorf("%w: server: meta server %s cannot hand out the cluster secret", meta.ErrUnavailable, s.cfg.ID)
	}
	pub, err := pki.ParseCSR(req.CSR)
	if err != nil {
		return meta.NodeJoinResult{}, fmt.Errorf("%w: server: join: %v", meta.ErrInvalid, err)
	}
	if err := meta.ValidateAgentName(req.ID); err != nil {
		return meta.NodeJoinResult{}, fmt.Errorf("server: join: node ID: %w", err)
	}
	hash := meta.EnrollTokenHash(req.Token)
	if t, err := s.fsm.EnrollToken(hash); err != nil || t.State(s.fsm.Now()) != meta.TokenLive {
		src := sourceOf(req.From)
		if first, err := s.enrollLimit.take(src, s.cfg.Now()); err != nil {
			if first {
				s.log.Warn("failed join attempts refused until the allowance refills", "from", src, "err", err)
			}
			return meta.NodeJoinResult{}, err
		}
	}
	serial, err := pki.NewSerial()
	if err != nil {
		return meta.NodeJoinResult{}, fmt.Errorf("server: join: %w", err)
	}
	res, err := s.propose(timeoutOf(ctx), command.ConsumeNodeToken{Hash: hash, ID: req.ID, Role: req.Role,
		Serial: pki.SerialString(serial), From: req.From})
	if err != nil {
		return meta.NodeJoinResult{}, fmt.Errorf("server: join: %w", err)
	}
	t := res.(meta.EnrollToken)
	role := transport.RoleNode
	if t.Role == meta.NodeRoleMeta {
		role = transport.RoleMeta
	}
	issued := s.cfg.Now()
	if t.UsedAt.Before(issued) {
		issued = t.UsedAt // see Enroll: NotBefore never after the cluster time the token was spent
	}
	cert, _, err := s.signAndRecord(ctx, ca, pub, serial, pki.IssueRequest{CommonName: t.Name, Role: role}, issued,
		meta.IssuedByJoin, "token "+t.ID, "")
	if err != nil {
		s.log.Error("node join: signing failed after the token was consumed", "token", t.ID, "node", t.Name, "err", err)
		return meta.NodeJoinResult{}, err
	}
	info := s.cfg.JoinInfo()
	metas, err := s.raftServers()
	if err != nil {
		return meta.NodeJoinResult{}, err
	}
	s.log.Info("node joined", "node", t.Name, "role", t.Role, "serial", t.Serial, "token", t.ID)
	return meta.NodeJoinResult{Cert: cert, CA: ca.RootPEM(), ID: t.Name, Role: t.Role, Domain: t.Domain, Serial: t.Serial,
		ClusterSecret: info.ClusterSecret, MetaServers: metas, GossipSeeds: info.GossipSeeds}, nil
}

// IssueCert implements meta.CertService. Refusals are audited; an issued certificate is
// audited by its record.
func (s *Server) IssueCert(ctx context.Context, req meta.IssueCertRequest) (meta.CertResult, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.CertResult{}, err
	}
	res, err := s.issueCert(ctx, req)
	if err != nil && !isNotLeader(err) {
		s.auditRefusal(ctx, meta.PrincipalFrom(ctx), "cert issue", "", fmt.Sprintf("%s %q", req.Role, req.Principal), err)
	}
	return res, err
}

// isNotLeader reports a refusal for want of leadership (the request goes elsewhere).
func isNotLeader(err error) bool {
	var nl *meta.NotLeaderError
	return errors.As(err, &nl)
}

func (s *Server) issueCert(ctx context.Context, req meta.IssueCertRequest) (meta.CertResult, error) {
	p := meta.PrincipalFrom(ctx)
	if err := p.Authorize(meta.ActIssueCert, ""); err != nil {
		return meta.CertResult{}, fmt.Errorf("server: issue certificate: %w", err)
	}
	var role transport.Role
	switch req.Role {
	case meta.CertRoleAdmin:
		role = transport.RoleAdmin
		if len(req.Vaults) > 0 {
			return meta.CertResult{}, fmt.Errorf("%w: server: an admin certificate is not scoped to vaults", meta.ErrInvalid)
		}
	case meta.CertRoleRestore:
		role = transport.RoleRestore
	case meta.CertRoleReplication:
		role = transport.RoleReplication
		if len(req.Vaults) == 0 {
			return meta.CertResult{}, fmt.Errorf("%w: server: a replication certificate names the vaults it replicates (--vaults)", meta.ErrInvalid)
		}
	default:
		return meta.CertResult{}, fmt.Errorf("%w: server: issue certificate: role %q: want %q, %q or %q (nodes join with a token, agents enroll with one)",
			meta.ErrInvalid, req.Role, meta.CertRoleAdmin, meta.CertRoleRestore, meta.CertRoleReplication)
	}
	if err := meta.ValidateAgentName(req.Principal); err != nil {
		return meta.CertResult{}, fmt.Errorf("server: issue certificate: principal: %w", err)
	}
	for _, v := range req.Vaults {
		if err := meta.ValidateVaultID(meta.VaultID(v)); err != nil {
			return meta.CertResult{}, fmt.Errorf("server: issue certificate: %w", err)
		}
	}
	if req.Validity < 0 || time.Duration(req.Validity) > pki.CAValidity {
		return meta.CertResult{}, fmt.Errorf("%w: server: issue certificate: validity %v", meta.ErrInvalid, time.Duration(req.Validity))
	}
	ca, err := s.issuer("issue certificates")
	if err != nil {
		return meta.CertResult{}, err
	}
	pub, cn, err := pki.ParseCSRName(req.CSR)
	if err != nil {
		return meta.CertResult{}, fmt.Errorf("%w: server: issue certificate: %v", meta.ErrInvalid, err)
	}
	if cn != req.Principal {
		return meta.CertResult{}, fmt.Errorf("%w: server: issue certificate: the request is for %q, not %q: a certificate is issued only for the name its request was made for (make one with coffer cert request --principal %s)",
			meta.ErrDenied, cn, req.Principal, req.Principal)
	}
	if err := s.gateIssueAdmin(ctx, req); err != nil {
		return meta.CertResult{}, err
	}
	serial, err := pki.NewSerial()
	if err != nil {
		return meta.CertResult{}, fmt.Errorf("server: issue certificate: %w", err)
	}
	issued := s.cfg.Now()
	if now := s.fsm.Now(); !now.IsZero() && now.Before(issued) {
		issued = now
	}
	cert, rec, err := s.signAndRecord(ctx, ca, pub, serial, pki.IssueRequest{CommonName: req.Principal, Role: role, Vaults: req.Vaults,
		Validity: time.Duration(req.Validity)}, issued, meta.IssuedByAdmin, p.Name, "")
	if err != nil {
		return meta.CertResult{}, err
	}
	s.log.Info("certificate issued", "principal", rec.Principal, "role", rec.Role, "serial", rec.Serial, "by", p.Name)
	return meta.CertResult{Cert: cert, CA: ca.RootPEM(), Record: rec}, nil
}

// RenewCert implements meta.CertService. The identity comes from the certificate the
// caller presented (as the receiving server observed it), never from the request.
// Refusals are audited; a renewal is audited by its record.
func (s *Server) RenewCert(ctx context.Context, req meta.RenewRequest) (meta.CertResult, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.CertResult{}, err
	}
	res, err := s.renewCert(ctx, req)
	if err != nil && !isNotLeader(err) {
		s.auditRefusal(ctx, meta.PrincipalFrom(ctx), "cert renew", "", "serial "+req.Presented.Serial, err)
	}
	return res, err
}

func (s *Server) renewCert(ctx context.Context, req meta.RenewRequest) (meta.CertResult, error) {
	pr := req.Presented
	if pr.Serial == "" || pr.Principal == "" {
		return meta.CertResult{}, fmt.Errorf("%w: server: renew: no certificate was presented", meta.ErrDenied)
	}
	var role transport.Role
	switch pr.Role {
	case meta.CertRoleNode:
		role = transport.RoleNode
	case meta.CertRoleMeta:
		role = transport.RoleMeta
	case meta.CertRoleAdmin:
		role = transport.RoleAdmin
	case meta.CertRoleAgent:
		role = transport.RoleAgent
	case meta.CertRoleRestore:
		role = transport.RoleRestore
	case meta.CertRoleReplication:
		role = transport.RoleReplication
	default:
		return meta.CertResult{}, fmt.Errorf("%w: server: renew: certificate role %q cannot be renewed", meta.ErrDenied, pr.Role)
	}
	if err := s.leaderRead(); err != nil {
		return meta.CertResult{}, err
	}
	revs, _, err := s.fsm.Revocations()
	if err != nil {
		return meta.CertResult{}, err
	}
	if r, ok := meta.Revoked(revs, pr.Serial, pr.Principal, pr.Issued); ok {
		return meta.CertResult{}, fmt.Errorf("%w: server: renew: certificate serial %s of %q was revoked at %s by %s; a revoked certificate is not renewed",
			meta.ErrDenied, pr.Serial, pr.Principal, r.At.Format(time.RFC3339), r.By)
	}
	ca, err := s.issuer("renew certificates")
	if err != nil {
		return meta.CertResult{}, err
	}
	pub, cn, err := pki.ParseCSRName(req.CSR)
	if err != nil {
		return meta.CertResult{}, fmt.Errorf("%w: server: renew: %v", meta.ErrInvalid, err)
	}
	if cn != pr.Principal {
		return meta.CertResult{}, fmt.Errorf("%w: server: renew: the request is for %q, but the presented certificate is %q's: a renewal keeps the identity",
			meta.ErrDenied, cn, pr.Principal)
	}
	serial, err := pki.NewSerial()
	if err != nil {
		return meta.CertResult{}, fmt.Errorf("server: renew: %w", err)
	}
	var validity time.Duration
	if role == transport.RoleAgent {
		validity = s.cfg.AgentCertValidity
	}
	issued := s.cfg.Now()
	if now := s.fsm.Now(); !now.IsZero() && now.Before(issued) {
		issued = now
	}
	cert, rec, err := s.signAndRecord(ctx, ca, pub, serial, pki.IssueRequest{CommonName: pr.Principal, Role: role,
		Vaults: slices.Clone(pr.Vaults), Validity: validity}, issued, meta.IssuedByRenew, pr.Principal, pr.Serial)
	if err != nil {
		return meta.CertResult{}, err
	}
	s.log.Info("certificate renewed", "principal", rec.Principal, "role", rec.Role, "serial", rec.Serial, "renews", pr.Serial)
	return meta.CertResult{Cert: cert, CA: ca.RootPEM(), Record: rec}, nil
}

// ListCerts implements meta.CertService (a current read on the leader).
func (s *Server) ListCerts(ctx context.Context) ([]meta.IssuedCert, []meta.Revocation, time.Time, error) {
	if err := s.leaderRead(); err != nil {
		return nil, nil, time.Time{}, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActRevoke, ""); err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("server: list certificates: %w", err)
	}
	certs, err := s.fsm.IssuedCerts()
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	revs, _, err := s.fsm.Revocations()
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	slices.SortStableFunc(certs, func(a, b meta.IssuedCert) int { return a.At.Compare(b.At) })
	return certs, revs, s.fsm.Now(), nil
}
