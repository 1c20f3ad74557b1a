package command

import "github.com/cofferhq/coffer/meta"

// Host decommission (issue 19, part 3): tags 200..209.
const (
	TypeRetireHost        Type = 200
	TypeReinstateHost     Type = 201
	TypeRequestHostRun    Type = 202
	TypeExpireRetiredHost Type = 203
)

// RetireHost records a host's decommission (refused while one of its jobs runs): the
// host gets no policies from then on. Admin only; audited. The leader revokes the
// host's certificates with a RevokeCert entry after it.
type RetireHost struct {
	Decommission meta.HostDecommission `cbor:"decommission"`
	By           meta.Principal        `cbor:"by"`
}

// ReinstateHost clears a host's retirement within its rollback window. Admin only;
// audited.
type ReinstateHost struct {
	Host string         `cbor:"host"`
	By   meta.Principal `cbor:"by"`
}

// RequestHostRun asks a host's agent for one run of each of its backup policies now (a
// final snapshot): the host's record carries the request's cluster time, and the
// policy version changes so the agent reads it at its next poll. Admin only; audited.
type RequestHostRun struct {
	Host string         `cbor:"host"`
	By   meta.Principal `cbor:"by"`
}

// ExpireRetiredHost forgets a retired host's snapshots once its keep window has ended
// (the FSM decides at the entry's cluster time); locked and held ones stay, reported.
// The leader proposes it; audited as the system.
type ExpireRetiredHost struct {
	Host string `cbor:"host"`
}

// Type implements Body.
func (RetireHost) Type() Type { return TypeRetireHost }

// Type implements Body.
func (ReinstateHost) Type() Type { return TypeReinstateHost }

// Type implements Body.
func (RequestHostRun) Type() Type { return TypeRequestHostRun }

// Type implements Body.
func (ExpireRetiredHost) Type() Type { return TypeExpireRetiredHost }

// hostKind describes the host command type t; ok is false for other tags.
func hostKind(t Type) (kind, bool) {
	switch t {
	case TypeRetireHost:
		return kindFor[RetireHost]()
	case TypeReinstateHost:
		return kindFor[ReinstateHost]()
	case TypeRequestHostRun:
		return kindFor[RequestHostRun]()
	case TypeExpireRetiredHost:
		return kindFor[ExpireRetiredHost]()
	}
	return kind{}, false
}
