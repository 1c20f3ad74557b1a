package metarpc

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// approvalFuzzSvc answers the approval methods and the seal key with zero values: the
// fuzz target exercises the decoding of their requests.
type approvalFuzzSvc struct{ *fakeSvc }

func (approvalFuzzSvc) ListApprovals(context.Context) ([]meta.ApprovalRequest, error) {
	return nil, nil
}
func (approvalFuzzSvc) DecideApproval(context.Context, string, bool, string, string) (meta.ApprovalRequest, error) {
	return meta.ApprovalRequest{}, nil
}
func (approvalFuzzSvc) EnrollMFA(context.Context, string, string) error { return nil }
func (approvalFuzzSvc) ApprovalPolicy(context.Context) (meta.ApprovalPolicy, error) {
	return meta.ApprovalPolicy{}, nil
}
func (approvalFuzzSvc) SetApprovalPolicy(context.Context, meta.ApprovalPolicy) (meta.ApprovalPolicy, error) {
	return meta.ApprovalPolicy{}, nil
}
func (approvalFuzzSvc) LocalSealKey(context.Context) ([]byte, error) { return make([]byte, 32), nil }

var (
	_ meta.ApprovalService = approvalFuzzSvc{}
	_ SealKeyHolder        = approvalFuzzSvc{}
)

// FuzzApprovalRPC feeds arbitrary bodies to the approval methods (and meta.SealKey) as an
// admin and as a meta peer, and arbitrary command bodies of the approval tags to the Raft
// command decoder: nothing panics; a refused request is a *transport.Error with a known
// code other than Internal and no reply; a decoded command re-encodes.
func FuzzApprovalRPC(f *testing.F) {
	methods := []string{MethodListApprovals, MethodDecideApproval, MethodEnrollMFA, MethodApprovalPolicy, MethodSetApprovalPolicy, MethodSealKey}
	seeds := []any{listApprovalsReq{}, decideApprovalReq{ID: "ap-0123456789abcdef", Approve: true, OTP: "123456", Reason: "r"},
		enrollMFAReq{Secret: "JBSWY3DPEHPK3PXP", Code: "123456"}, approvalPolicyReq{},
		setApprovalPolicyReq{Policy: meta.DefaultApprovalPolicy()}, sealKeyReq{ID: "m1"}}
	for i, v := range seeds {
		body, err := wire.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), body)
	}
	codec := command.NewCodec()
	for _, b := range []command.Body{
		command.RequestApproval{TTL: 1, Request: meta.ApprovalRequest{ID: "ap-0123456789abcdef", Operation: meta.OpVaultDelete, Method: "meta.DeleteVault", Body: []byte{0xa0}}},
		command.DecideApproval{ID: "ap-0123456789abcdef", Approve: true, Step: 7},
		command.FinishApproval{ID: "ap-0123456789abcdef", Err: "x"},
		command.SetApprovalPolicy{Policy: meta.DefaultApprovalPolicy()},
		command.SetMFA{Enrollment: meta.MFAEnrollment{Principal: "a", Sealed: []byte{1}, SealKey: "k"}},
	} {
		raw, err := codec.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(100+int(b.Type())-int(command.TypeRequestApproval)), raw)
	}
	peers := []transport.Peer{{Principal: "fuzz-admin", Role: transport.RoleAdmin}, {Principal: "m1", Role: transport.RoleMeta}}
	f.Fuzz(func(t *testing.T, m uint8, body []byte) {
		if m >= 100 { // a Raft command of the approval tags
			typ := command.TypeRequestApproval + command.Type(int(m-100)%5)
			env, err := wire.Marshal(struct {
				Version uint8  `cbor:"1,keyasint"`
				Type    uint16 `cbor:"2,keyasint"`
				Time    int64  `cbor:"3,keyasint"`
				Body    []byte `cbor:"4,keyasint"`
			}{command.Version, uint16(typ), 1, body})
			if err != nil {
				return
			}
			cmd, err := command.Decode(env)
			if err != nil {
				if !errors.Is(err, command.ErrDecode) {
					t.Fatalf("%s: error does not wrap ErrDecode: %v", typ, err)
				}
				return
			}
			if _, err := command.Encode(cmd); err != nil {
				t.Fatalf("%s: decoded command does not re-encode: %v", typ, err)
			}
			return
		}
		method := methods[int(m)%len(methods)]
		for _, peer := range peers {
			h := NewServer(approvalFuzzSvc{newFake(true, "")}, nil, nil)
			reply, err := h.ServeRPC(context.Background(), peer, method, body)
			if err == nil {
				continue
			}
			var te *transport.Error
			if !errors.As(err, &te) {
				t.Fatalf("%s as %s: error without a wire code: %v", method, peer.Role, err)
			}
			if te.Code == transport.Internal || strings.HasPrefix(te.Code.String(), "code(") || reply != nil {
				t.Fatalf("%s as %s: %d-byte body: code %s (%v), reply %d bytes", method, peer.Role, len(body), te.Code, err, len(reply))
			}
		}
	})
}
