package metarpc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// fuzzSvc is fakeSvc plus every optional service, answering with zero values: what the
// fuzz target exercises is the server's decoding, not the service.
type fuzzSvc struct{ *fakeSvc }

func (fuzzSvc) DeleteSnapshots(context.Context, meta.VaultID, []meta.SnapshotID, meta.Bypass) ([]meta.Snapshot, error) {
	return nil, nil
}
func (fuzzSvc) Forget(context.Context, meta.VaultID, meta.Policy, bool) (meta.ForgetResult, error) {
	return meta.ForgetResult{}, nil
}
func (fuzzSvc) SetLock(context.Context, meta.VaultID, meta.SnapshotID, meta.Lock, meta.Bypass) (meta.Snapshot, error) {
	return meta.Snapshot{}, nil
}
func (fuzzSvc) SetHold(context.Context, meta.VaultID, meta.SnapshotID, bool, string) (meta.Snapshot, error) {
	return meta.Snapshot{}, nil
}
func (fuzzSvc) AuditLog(context.Context, uint64, int) ([]meta.AuditEntry, error) { return nil, nil }
func (fuzzSvc) RecordRefusal(context.Context, meta.AuditEntry) error             { return nil }
func (fuzzSvc) RecordNodeAction(context.Context, meta.AuditEntry) error          { return nil }
func (fuzzSvc) DeleteVault(context.Context, meta.VaultID, time.Duration, string) (meta.Vault, error) {
	return meta.Vault{}, nil
}
func (fuzzSvc) UndeleteVault(context.Context, meta.VaultID) (meta.Vault, error) {
	return meta.Vault{}, nil
}
func (fuzzSvc) SetVaultPolicy(context.Context, meta.VaultID, meta.VaultPolicy) (meta.Vault, error) {
	return meta.Vault{}, nil
}
func (fuzzSvc) IssueGrant(context.Context, meta.VaultID, meta.SnapshotID, time.Duration) ([]byte, grant.Grant, error) {
	return nil, grant.Grant{}, nil
}
func (fuzzSvc) NodeAction(context.Context, meta.NodeActionRequest) (placement.Map, error) {
	return placement.Map{}, nil
}
func (fuzzSvc) PGHealth(context.Context) ([]placement.PGHealth, error) { return nil, nil }
func (fuzzSvc) RunGC(context.Context, meta.GCOptions) (meta.GCReport, error) {
	return meta.GCReport{}, nil
}
func (fuzzSvc) GCStatus(context.Context) (meta.GCStatus, error) { return meta.GCStatus{}, nil }
func (fuzzSvc) CreateEnrollToken(context.Context, meta.VaultID, string, time.Duration, map[string]string) (string, meta.EnrollToken, error) {
	return "", meta.EnrollToken{}, nil
}
func (fuzzSvc) Enroll(context.Context, meta.EnrollRequest) (meta.EnrollResult, error) {
	return meta.EnrollResult{}, nil
}
func (fuzzSvc) ListEnrollTokens(context.Context, bool) ([]meta.EnrollToken, time.Time, error) {
	return nil, time.Time{}, nil
}
func (fuzzSvc) RevokeEnrollToken(context.Context, string, string) (meta.EnrollToken, error) {
	return meta.EnrollToken{}, nil
}
func (fuzzSvc) RevokeCert(context.Context, meta.Revocation) (meta.Revocation, error) {
	return meta.Revocation{}, nil
}
func (fuzzSvc) SecurityState(context.Context, uint64) (meta.SecurityState, error) {
	return meta.SecurityState{}, nil
}

func (fuzzSvc) PutPolicy(context.Context, meta.BackupPolicy, bool) (meta.BackupPolicy, error) {
	return meta.BackupPolicy{}, nil
}
func (fuzzSvc) DeletePolicy(context.Context, string) error                { return nil }
func (fuzzSvc) ListPolicies(context.Context) ([]meta.BackupPolicy, error) { return nil, nil }
func (fuzzSvc) HostPolicies(context.Context, string, uint64) (meta.HostPolicies, error) {
	return meta.HostPolicies{}, nil
}
func (fuzzSvc) StartJob(context.Context, meta.JobStart) (meta.Job, error)   { return meta.Job{}, nil }
func (fuzzSvc) ReportJob(context.Context, meta.JobReport) (meta.Job, error) { return meta.Job{}, nil }
func (fuzzSvc) Heartbeat(context.Context, meta.Heartbeat) error             { return nil }
func (fuzzSvc) ListJobs(context.Context, meta.JobFilter) ([]meta.Job, error) {
	return nil, nil
}
func (fuzzSvc) ListAgents(context.Context) ([]meta.Agent, error) { return nil, nil }
func (fuzzSvc) ChangeMeta(context.Context, meta.MetaChange) (meta.RaftStatus, error) {
	return meta.RaftStatus{}, nil
}
func (fuzzSvc) MetaServers(context.Context) ([]meta.Server, error) { return nil, nil }

var (
	_ meta.MembershipAdmin  = fuzzSvc{}
	_ meta.RetentionService = fuzzSvc{}
	_ meta.VaultService     = fuzzSvc{}
	_ meta.GrantService     = fuzzSvc{}
	_ meta.ClusterAdmin     = fuzzSvc{}
	_ meta.GCAdmin          = fuzzSvc{}
	_ meta.EnrollService    = fuzzSvc{}
	_ meta.JobService       = fuzzSvc{}
)

// FuzzServeRPC feeds arbitrary bodies to every meta.* method of AuthzRules on a Server
// over an in-memory service, as an admin peer: it never panics, and every failure is a
// *transport.Error with a known code other than Internal and no reply.
func FuzzServeRPC(f *testing.F) {
	rules := AuthzRules()
	seeds := map[string]any{
		MethodCreateVault:      createVaultReq{Vault: meta.Vault{ID: "v", KeyWraps: [][]byte{{1, 2}}}},
		MethodGetVault:         getVaultReq{ID: "v"},
		MethodCommitSnapshot:   commitSnapshotReq{Snapshot: meta.Snapshot{Vault: "v", Host: "h"}},
		MethodGetSnapshot:      getSnapshotReq{Vault: "v"},
		MethodSetClusterMap:    setClusterMapReq{Map: placement.Map{Epoch: 2, PGCount: 8, Profile: placement.DefaultProfile}},
		MethodRaftStatus:       raftStatusReq{Local: true},
		MethodDeleteSnapshots:  deleteSnapshotsReq{Vault: "v", IDs: []meta.SnapshotID{{1}}, Bypass: meta.Bypass{Governance: true, Reason: "r"}},
		MethodForget:           forgetReq{Vault: "v", Policy: meta.Policy{Last: 1}, DryRun: true},
		MethodSetLock:          setLockReq{Vault: "v", Lock: meta.Lock{Mode: meta.Compliance, Until: time.Unix(1e9, 0)}},
		MethodSetHold:          setHoldReq{Vault: "v", Hold: true, Reason: "r"},
		MethodAuditLog:         auditLogReq{After: 3, Limit: 10},
		MethodDeleteVault:      deleteVaultReq{ID: "v", Window: int64(time.Hour)},
		MethodSetVaultPolicy:   setVaultPolicyReq{ID: "v"},
		MethodIssueGrant:       issueGrantReq{Vault: "v", TTL: int64(time.Minute)},
		MethodEnroll:           enrollReq{Req: meta.EnrollRequest{Token: "t", CSR: []byte{0x30}}},
		MethodRevokeCert:       revokeCertReq{Revocation: meta.Revocation{Serial: "1f"}},
		MethodSecurityState:    securityStateReq{Known: 7},
		MethodAlertSinkSet:     opsReq[meta.AlertSink]{Arg: meta.AlertSink{Name: "p", Kind: meta.SinkWebhook, URL: "http://h/"}},
		MethodAlerts:           opsReq[meta.AlertFilter]{Arg: meta.AlertFilter{Open: true, Limit: 3}},
		MethodPutPolicy:        putPolicyReq{Policy: meta.BackupPolicy{Name: "p", Schedule: "@daily", Paths: []string{"/a"}, Hosts: []string{"h"}}, Create: true},
		MethodReportJob:        reportJobReq{Report: meta.JobReport{ID: "j0000000000000001", Final: true, Status: meta.JobFailed}},
		MethodHeartbeat:        heartbeatReq{Heartbeat: meta.Heartbeat{Running: []string{"j0000000000000001"}}},
		MethodListJobs:         listJobsReq{Filter: meta.JobFilter{Host: "h", Failed: true}},
		MethodChangeMeta:       changeMetaReq{Req: meta.MetaChange{Action: meta.MetaAdd, ID: "m4", Addr: "h:1"}},
		MethodMetaServers:      metaServersReq{},
		MethodHostDecommission: opsReq[meta.HostDecommission]{Arg: meta.HostDecommission{Host: "web01", KeepFor: time.Hour}},
		MethodHostDependencies: opsReq[string]{Arg: "web01"},
		MethodReplicationAdd: opsReq[meta.Replication]{Arg: meta.Replication{Name: "r", Source: []string{"h:1"}, SourceCA: []byte("ca"),
			Cert: []byte("c"), Key: []byte("k"), Principal: "site-b", Vault: "v", Schedule: "@daily"}},
		MethodReplicationRun: opsReq[string]{Arg: "r"},
	}
	for i, r := range rules {
		f.Add(uint8(i), []byte{0xa0})
		if v, ok := seeds[r.Method]; ok {
			body, err := wire.Marshal(v)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), body)
		}
	}
	admin := transport.Peer{Principal: "fuzz-admin", Role: transport.RoleAdmin}
	f.Fuzz(func(t *testing.T, m uint8, body []byte) {
		method := rules[int(m)%len(rules)].Method
		h := NewServer(fuzzSvc{newFake(true, "")}, nil, nil)
		reply, err := h.ServeRPC(context.Background(), admin, method, body)
		if err == nil {
			return
		}
		var te *transport.Error
		if !errors.As(err, &te) {
			t.Fatalf("%s: error without a wire code: %v", method, err)
		}
		if te.Code == transport.Internal || strings.HasPrefix(te.Code.String(), "code(") || reply != nil {
			t.Fatalf("%s: %d-byte body: code %s (%v), reply %d bytes", method, len(body), te.Code, err, len(reply))
		}
	})
}
