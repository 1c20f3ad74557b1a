package metarpc

import (
	"context"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport/wire"
)

// totpField is the field any request body may carry besides its own: the caller's
// current TOTP code (meta.WithTOTP). The leader checks it when the request is a gated
// operation whose requester has MFA enrolled (two-person rule, docs/security.md); other
// requests ignore it. Servers that predate it ignore it too (unknown fields are allowed
// in request bodies).
const totpField = "totp"

// maxTOTPLen bounds the code a request may carry (a TOTP code has 6 digits).
const maxTOTPLen = 16

// requestTOTP is the view of a request body that reads its code.
type requestTOTP struct {
	TOTP string `cbor:"totp,omitempty"`
}

// withRequestTOTP returns ctx carrying the TOTP code body carries, if any. A body that
// is not a map, or whose code is not a short string, carries none: the method's own
// decoding judges the body.
func withRequestTOTP(ctx context.Context, body []byte) context.Context {
	if len(body) == 0 {
		return ctx
	}
	var r requestTOTP
	if err := wire.Unmarshal(body, &r); err != nil || r.TOTP == "" || len(r.TOTP) > maxTOTPLen {
		return ctx
	}
	return meta.WithTOTP(ctx, r.TOTP)
}

// withTOTP returns req, a request struct, encoded with its totp field set to the code in
// ctx; req itself when ctx carries none.
func withTOTP(ctx context.Context, req any) (any, error) {
	code := meta.TOTPFrom(ctx)
	if code == "" {
		return req, nil
	}
	body, err := wire.Marshal(req)
	if err != nil {
		return nil, err
	}
	fields := map[string]cbor.RawMessage{}
	if err := wire.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("metarpc: add the TOTP code to a %T request: %w", req, err)
	}
	enc, err := wire.Marshal(code)
	if err != nil {
		return nil, err
	}
	fields[totpField] = enc
	b, err := wire.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return wire.Encoded(b), nil
}
