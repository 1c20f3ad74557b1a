package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

var _ meta.EnrollService = (*Server)(nil)

// CreateEnrollToken implements meta.EnrollService: the leader draws the token, the log
// records only its hash (and the audit entry only the token's ID).
func (s *Server) CreateEnrollToken(ctx context.Context, vault meta.VaultID, name string, ttl time.Duration, labels map[string]string) (string, meta.EnrollToken, error) {
	if err := s.leaderWrite(); err != nil {
		return "", meta.EnrollToken{}, err
	}
	if ttl == 0 {
		ttl = meta.DefaultEnrollTTL
	}
	tok, err := meta.NewEnrollToken()
	if err != nil {
		return "", meta.EnrollToken{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.CreateEnrollToken{Hash: meta.EnrollTokenHash(tok), Vault: vault, Name: name,
		TTL: int64(ttl), By: meta.PrincipalFrom(ctx), Labels: labels})
	if err != nil {
		return "", meta.EnrollToken{}, fmt.Errorf("server: create enrollment token: %w", err)
	}
	return tok, res.(meta.EnrollToken), nil
}

// Enroll implements meta.EnrollService. The token is consumed in the log first, with the
// serial the certificate will carry; only then is the certificate signed, so a token
// gives at most one certificate and a refused token none.
func (s *Server) Enroll(ctx context.Context, req meta.EnrollRequest) (meta.EnrollResult, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.EnrollResult{}, err
	}
	ca, err := s.issuer("enroll agents")
	if err != nil {
		return meta.EnrollResult{}, err
	}
	pub, err := pki.ParseCSR(req.CSR)
	if err != nil {
		s.figs.enrollInvalid.Add(1)
		return meta.EnrollResult{}, fmt.Errorf("%w: server: enroll: %v", meta.ErrInvalid, err)
	}
	hash := meta.EnrollTokenHash(req.Token)
	if req.Name != "" {
		if err := meta.ValidateAgentName(req.Name); err != nil {
			s.figs.enrollInvalid.Add(1)
			return meta.EnrollResult{}, err
		}
	}
	serial, err := pki.NewSerial()
	if err != nil {
		return meta.EnrollResult{}, fmt.Errorf("server: enroll: %w", err)
	}
	// Every attempt from here on writes a log entry and an audit record. One whose token
	// is not live here (unknown, used, revoked or expired) will fail, so it counts
	// against the limits per source address and in all (enrolllimit.go); a live token,
	// which only an admin can have handed out, is never held up by them. The FSM decides
	// again when it applies.
	if t, err := s.fsm.EnrollToken(hash); err != nil || t.State(s.fsm.Now()) != meta.TokenLive {
		src := sourceOf(req.From)
		if first, err := s.enrollLimit.take(src, s.cfg.Now()); err != nil {
			if first {
				s.log.Warn("failed enrollment attempts refused until the allowance refills", "from", src, "err", err)
			}
			s.figs.enrollLimited.Add(1)
			return meta.EnrollResult{}, err
		}
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return meta.EnrollResult{}, fmt.Errorf("%w: server: enroll: public key: %v", meta.ErrInvalid, err)
	}
	keySum := sha256.Sum256(spki)
	res, err := s.propose(timeoutOf(ctx), command.ConsumeEnrollToken{Hash: hash, Name: req.Name,
		Serial: pki.SerialString(serial), From: req.From, Key: hex.EncodeToString(keySum[:])})
	if err != nil {
		if errors.Is(err, meta.ErrDenied) {
			s.figs.enrollToken.Add(1)
		}
		return meta.EnrollResult{}, fmt.Errorf("server: enroll: %w", err)
	}
	t := res.(meta.EnrollToken)
	if t.Serial != pki.SerialString(serial) {
		// A retry of an enrollment already applied (the FSM checked token, key and
		// window): the certificate carries the serial the log recorded the first time.
		again, ok := new(big.Int).SetString(t.Serial, 16)
		if !ok {
			return meta.EnrollResult{}, fmt.Errorf("server: enroll: recorded serial %q is not hex", t.Serial)
		}
		serial = again
		s.log.Info("enrollment retried by the same key; same serial", "agent", t.Principal, "token", t.ID, "serial", t.Serial)
	}
	// A revocation by principal covers the certificates whose NotBefore is before the
	// revocation's cluster time, so NotBefore must not be later than the cluster time at
	// which the token was spent: a leader whose wall clock is ahead of cluster time (or
	// cluster time that lags after an outage) would otherwise sign certificates that a
	// later `cert revoke --principal` does not cover.
	issued := s.cfg.Now()
	if t.UsedAt.Before(issued) {
		issued = t.UsedAt
	}
	cert, _, err := s.signAndRecord(ctx, ca, pub, serial, pki.IssueRequest{CommonName: t.Principal, Role: transport.RoleAgent,
		Vaults: []string{string(t.Vault)}, Validity: s.cfg.AgentCertValidity}, issued, meta.IssuedByEnroll, "token "+t.ID, "")
	if err != nil {
		// NB: the token is spent; the operator creates a new one. Signing fails only on a
		// broken CA, which every enrollment would hit.
		s.log.Error("enrollment: signing failed after the token was consumed", "token", t.ID, "agent", t.Principal, "err", err)
		return meta.EnrollResult{}, fmt.Errorf("server: enroll %s: sign: %w", t.Principal, err)
	}
	s.log.Info("agent enrolled", "agent", t.Principal, "vault", t.Vault, "serial", t.Serial, "token", t.ID)
	return meta.EnrollResult{Cert: cert, CA: ca.RootPEM(), Vault: t.Vault, Principal: t.Principal, Serial: t.Serial}, nil
}

// ListEnrollTokens implements meta.EnrollService (a current read on the leader, whose
// cluster time decides which tokens are live).
func (s *Server) ListEnrollTokens(ctx context.Context, all bool) ([]meta.EnrollToken, time.Time, error) {
	if err := s.leaderRead(); err != nil {
		return nil, time.Time{}, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActEnroll, ""); err != nil {
		return nil, time.Time{}, fmt.Errorf("server: list enrollment tokens: %w", err)
	}
	ts, err := s.fsm.EnrollTokens()
	if err != nil {
		return nil, time.Time{}, err
	}
	now := s.fsm.Now()
	out := ts[:0]
	for _, t := range ts {
		if all || t.State(now) == meta.TokenLive {
			t.Hash, t.UsedKey = "", "" // the ID names it; the hashes stay on the servers
			out = append(out, t)
		}
	}
	slices.SortStableFunc(out, func(a, b meta.EnrollToken) int { return a.Created.Compare(b.Created) })
	return out, now, nil
}

// RevokeEnrollToken implements meta.EnrollService.
func (s *Server) RevokeEnrollToken(ctx context.Context, id, reason string) (meta.EnrollToken, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.EnrollToken{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.RevokeEnrollToken{ID: id, Reason: reason, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.EnrollToken{}, fmt.Errorf("server: revoke enrollment token: %w", err)
	}
	t := res.(meta.EnrollToken)
	t.Hash = ""
	return t, nil
}

// RevokeCert implements meta.EnrollService.
func (s *Server) RevokeCert(ctx context.Context, r meta.Revocation) (meta.Revocation, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Revocation{}, err
	}
	if r.Serial != "" {
		norm, err := pki.ParseSerial(r.Serial)
		if err != nil {
			return meta.Revocation{}, fmt.Errorf("%w: %v", meta.ErrInvalid, err)
		}
		r.Serial = norm
	}
	r.Seq, r.At, r.By = 0, time.Time{}, ""
	if err := meta.ValidateRevocation(r); err != nil {
		return meta.Revocation{}, err
	}
	if err := s.gateRevokeCert(ctx, r); err != nil {
		return meta.Revocation{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.RevokeCert{Revocation: r, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.Revocation{}, fmt.Errorf("server: revoke: %w", err)
	}
	return res.(meta.Revocation), nil
}

// SecurityState implements meta.EnrollService (a current read on the leader, which vouches
// for the cluster time it reports). Nodes and admins only.
func (s *Server) SecurityState(ctx context.Context, known uint64) (meta.SecurityState, error) {
	if err := s.leaderRead(); err != nil {
		return meta.SecurityState{}, err
	}
	p := meta.PrincipalFrom(ctx)
	if p.Role != meta.RoleNode && !p.Can(meta.ActRevoke, "") {
		return meta.SecurityState{}, fmt.Errorf("%w: server: %s may not read the revocation list (nodes and admins)", meta.ErrDenied, p)
	}
	list, version, err := s.fsm.Revocations()
	if err != nil {
		return meta.SecurityState{}, err
	}
	st := meta.SecurityState{Now: s.fsm.Now(), Version: version}
	if version != known {
		st.Revocations = list
	}
	return st, nil
}
