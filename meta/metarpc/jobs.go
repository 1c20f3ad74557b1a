package metarpc

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
)

// Backup policy, agent and job methods (meta.JobService).
const (
	MethodPutPolicy    = "meta.PutPolicy"
	MethodDeletePolicy = "meta.DeletePolicy"
	MethodListPolicies = "meta.ListPolicies"
	MethodHostPolicies = "meta.HostPolicies"
	MethodStartJob     = "meta.StartJob"
	MethodReportJob    = "meta.ReportJob"
	MethodHeartbeat    = "meta.Heartbeat"
	MethodListJobs     = "meta.ListJobs"
	MethodListAgents   = "meta.ListAgents"
)

// jobRules is the authorization table of the job methods (part of AuthzRules).
func jobRules() []authz.Rule {
	fwd := authz.If("forwarding a caller's request (checked as that caller)")
	self := authz.If("for itself only (its certificate's principal)")
	return []authz.Rule{
		{Method: MethodPutPolicy, Destructive: true, Doc: "create or change a backup policy",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodDeletePolicy, Destructive: true, Doc: "delete a backup policy",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodListPolicies, Doc: "list every backup policy",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodHostPolicies, Doc: "the backup policies of one host (the agent daemon's poll)",
			Agent: authz.If("its own host only"), Admin: authz.Allow, Meta: fwd},
		{Method: MethodStartJob, Doc: "open a job record (a scheduled or manual backup)",
			Agent: authz.If("for itself only, its policies and vaults"), Admin: authz.Allow, Meta: fwd},
		{Method: MethodReportJob, Doc: "record a job's progress or end",
			Agent: authz.If("its own jobs only"), Admin: authz.Allow, Meta: fwd},
		{Method: MethodHeartbeat, Doc: "an agent's heartbeat (keeps its running jobs alive)",
			Agent: self, Admin: authz.Allow, Meta: fwd},
		{Method: MethodListJobs, Doc: "list job records",
			Agent: authz.If("its own jobs only"), Admin: authz.Allow, Meta: fwd},
		{Method: MethodListAgents, Doc: "the agent inventory (admin agents)",
			Admin: authz.Allow, Meta: fwd},
	}
}

type (
	putPolicyReq struct {
		Policy meta.BackupPolicy `cbor:"policy"`
		Create bool              `cbor:"create,omitempty"`
		Fwd    bool              `cbor:"fwd,omitempty"`
		As     *meta.Principal   `cbor:"as,omitempty"`
	}
	deletePolicyReq struct {
		Name string          `cbor:"name"`
		Fwd  bool            `cbor:"fwd,omitempty"`
		As   *meta.Principal `cbor:"as,omitempty"`
	}
	listPoliciesReq struct {
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	policyList struct {
		Policies []meta.BackupPolicy `cbor:"policies"`
	}
	hostPoliciesReq struct {
		Host  string          `cbor:"host,omitempty"`
		Known uint64          `cbor:"known,omitempty"`
		Fwd   bool            `cbor:"fwd,omitempty"`
		As    *meta.Principal `cbor:"as,omitempty"`
	}
	startJobReq struct {
		Start meta.JobStart   `cbor:"start"`
		Fwd   bool            `cbor:"fwd,omitempty"`
		As    *meta.Principal `cbor:"as,omitempty"`
	}
	reportJobReq struct {
		Report meta.JobReport  `cbor:"report"`
		Fwd    bool            `cbor:"fwd,omitempty"`
		As     *meta.Principal `cbor:"as,omitempty"`
	}
	heartbeatReq struct {
		Heartbeat meta.Heartbeat  `cbor:"heartbeat"`
		Fwd       bool            `cbor:"fwd,omitempty"`
		As        *meta.Principal `cbor:"as,omitempty"`
	}
	listJobsReq struct {
		Filter meta.JobFilter  `cbor:"filter"`
		Fwd    bool            `cbor:"fwd,omitempty"`
		As     *meta.Principal `cbor:"as,omitempty"`
	}
	jobList struct {
		Jobs []meta.Job `cbor:"jobs"`
	}
	listAgentsReq struct {
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	agentList struct {
		Agents []meta.Agent `cbor:"agents"`
	}
)

// serveJobs runs the meta.JobService methods; handled is false for other methods.
func (h *Server) serveJobs(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, handled bool, err error) {
	switch method {
	case MethodPutPolicy, MethodDeletePolicy, MethodListPolicies, MethodHostPolicies, MethodStartJob,
		MethodReportJob, MethodHeartbeat, MethodListJobs, MethodListAgents:
	default:
		return nil, nil, false, nil
	}
	svc, ok := h.svc.(meta.JobService)
	if !ok {
		return nil, nil, true, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: this server keeps no jobs", method)}
	}
	switch method {
	case MethodPutPolicy:
		var r putPolicyReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		p, err := svc.PutPolicy(ctx, r.Policy, r.Create)
		return p, markFwd(&r, &r.Fwd), true, err
	case MethodDeletePolicy:
		var r deletePolicyReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		err := svc.DeletePolicy(ctx, r.Name)
		return empty{}, markFwd(&r, &r.Fwd), true, err
	case MethodListPolicies:
		var r listPoliciesReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		ps, err := svc.ListPolicies(ctx)
		return policyList{Policies: ps}, markFwd(&r, &r.Fwd), true, err
	case MethodHostPolicies:
		var r hostPoliciesReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		hp, err := svc.HostPolicies(ctx, r.Host, r.Known)
		return hp, markFwd(&r, &r.Fwd), true, err
	case MethodStartJob:
		var r startJobReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		j, err := svc.StartJob(ctx, r.Start)
		return j, markFwd(&r, &r.Fwd), true, err
	case MethodReportJob:
		var r reportJobReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		j, err := svc.ReportJob(ctx, r.Report)
		return j, markFwd(&r, &r.Fwd), true, err
	case MethodHeartbeat:
		var r heartbeatReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		err := svc.Heartbeat(ctx, r.Heartbeat)
		return empty{}, markFwd(&r, &r.Fwd), true, err
	case MethodListJobs:
		var r listJobsReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		js, err := svc.ListJobs(ctx, r.Filter)
		return jobList{Jobs: js}, markFwd(&r, &r.Fwd), true, err
	default: // MethodListAgents
		var r listAgentsReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		as, err := svc.ListAgents(ctx)
		return agentList{Agents: as}, markFwd(&r, &r.Fwd), true, err
	}
}

var _ meta.JobService = (*Client)(nil)

// PutPolicy implements meta.JobService.
func (cl *Client) PutPolicy(ctx context.Context, p meta.BackupPolicy, create bool) (meta.BackupPolicy, error) {
	var out meta.BackupPolicy
	err := cl.call(ctx, MethodPutPolicy, putPolicyReq{Policy: p, Create: create}, &out)
	return out, err
}

// DeletePolicy implements meta.JobService.
func (cl *Client) DeletePolicy(ctx context.Context, name string) error {
	return cl.call(ctx, MethodDeletePolicy, deletePolicyReq{Name: name}, &empty{})
}

// ListPolicies implements meta.JobService.
func (cl *Client) ListPolicies(ctx context.Context) ([]meta.BackupPolicy, error) {
	var out policyList
	err := cl.call(ctx, MethodListPolicies, listPoliciesReq{}, &out)
	return out.Policies, err
}

// HostPolicies implements meta.JobService.
func (cl *Client) HostPolicies(ctx context.Context, host string, known uint64) (meta.HostPolicies, error) {
	var out meta.HostPolicies
	err := cl.call(ctx, MethodHostPolicies, hostPoliciesReq{Host: host, Known: known}, &out)
	return out, err
}

// StartJob implements meta.JobService.
func (cl *Client) StartJob(ctx context.Context, s meta.JobStart) (meta.Job, error) {
	var out meta.Job
	err := cl.call(ctx, MethodStartJob, startJobReq{Start: s}, &out)
	return out, err
}

// ReportJob implements meta.JobService.
func (cl *Client) ReportJob(ctx context.Context, r meta.JobReport) (meta.Job, error) {
	var out meta.Job
	err := cl.call(ctx, MethodReportJob, reportJobReq{Report: r}, &out)
	return out, err
}

// Heartbeat implements meta.JobService.
func (cl *Client) Heartbeat(ctx context.Context, hb meta.Heartbeat) error {
	return cl.call(ctx, MethodHeartbeat, heartbeatReq{Heartbeat: hb}, &empty{})
}

// ListJobs implements meta.JobService.
func (cl *Client) ListJobs(ctx context.Context, f meta.JobFilter) ([]meta.Job, error) {
	var out jobList
	err := cl.call(ctx, MethodListJobs, listJobsReq{Filter: f}, &out)
	return out.Jobs, err
}

// ListAgents implements meta.JobService.
func (cl *Client) ListAgents(ctx context.Context) ([]meta.Agent, error) {
	var out agentList
	err := cl.call(ctx, MethodListAgents, listAgentsReq{}, &out)
	return out.Agents, err
}
