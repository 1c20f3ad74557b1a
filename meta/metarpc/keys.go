package metarpc

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
)

// Vault key methods (meta.KeyService).
const (
	MethodUpdateVaultKeys   = "meta.UpdateVaultKeys"
	MethodTouchKeyWrap      = "meta.TouchKeyWrap"
	MethodPlatformRecipient = "meta.PlatformRecipient"
	MethodPlatformUnwrap    = "meta.PlatformUnwrap"
)

type (
	updateVaultKeysReq struct {
		Vault  meta.VaultID    `cbor:"vault"`
		Change meta.KeysChange `cbor:"change"`
		Fwd    bool            `cbor:"fwd,omitempty"`
		As     *meta.Principal `cbor:"as,omitempty"`
	}
	touchKeyWrapReq struct {
		Vault meta.VaultID    `cbor:"vault"`
		ID    string          `cbor:"id"`
		Fwd   bool            `cbor:"fwd,omitempty"`
		As    *meta.Principal `cbor:"as,omitempty"`
	}
	platformRecipientReq struct {
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	platformUnwrapReq struct {
		Vault     meta.VaultID    `cbor:"vault"`
		Recipient string          `cbor:"recipient"`
		Fwd       bool            `cbor:"fwd,omitempty"`
		As        *meta.Principal `cbor:"as,omitempty"`
	}
	stringResp struct {
		S string `cbor:"s"`
	}
	bytesResp struct {
		B []byte `cbor:"b"`
	}
)

// serveKeys runs the meta.KeyService methods; handled is false for other methods.
func (h *Server) serveKeys(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, handled bool, err error) {
	switch method {
	case MethodUpdateVaultKeys, MethodTouchKeyWrap, MethodPlatformRecipient, MethodPlatformUnwrap:
	default:
		return nil, nil, false, nil
	}
	svc, ok := h.svc.(meta.KeyService)
	if !ok {
		return nil, nil, true, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: this server keeps no vault key records", method)}
	}
	switch method {
	case MethodUpdateVaultKeys:
		var r updateVaultKeysReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		v, err := svc.UpdateVaultKeys(ctx, r.Vault, r.Change)
		return v, markFwd(&r, &r.Fwd), true, err
	case MethodTouchKeyWrap:
		var r touchKeyWrapReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		return struct{}{}, markFwd(&r, &r.Fwd), true, svc.TouchKeyWrap(ctx, r.Vault, r.ID)
	case MethodPlatformRecipient:
		var r platformRecipientReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		s, err := svc.PlatformRecipient(ctx)
		return stringResp{S: s}, markFwd(&r, &r.Fwd), true, err
	default: // MethodPlatformUnwrap
		var r platformUnwrapReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		b, err := svc.PlatformUnwrap(ctx, r.Vault, r.Recipient)
		return bytesResp{B: b}, markFwd(&r, &r.Fwd), true, err
	}
}

var _ meta.KeyService = (*Client)(nil)

// UpdateVaultKeys implements meta.KeyService.
func (cl *Client) UpdateVaultKeys(ctx context.Context, vault meta.VaultID, c meta.KeysChange) (meta.Vault, error) {
	var out meta.Vault
	err := cl.call(ctx, MethodUpdateVaultKeys, updateVaultKeysReq{Vault: vault, Change: c}, &out)
	return out, err
}

// TouchKeyWrap implements meta.KeyService.
func (cl *Client) TouchKeyWrap(ctx context.Context, vault meta.VaultID, id string) error {
	var out struct{}
	return cl.call(ctx, MethodTouchKeyWrap, touchKeyWrapReq{Vault: vault, ID: id}, &out)
}

// PlatformRecipient implements meta.KeyService.
func (cl *Client) PlatformRecipient(ctx context.Context) (string, error) {
	var out stringResp
	err := cl.call(ctx, MethodPlatformRecipient, platformRecipientReq{}, &out)
	return out.S, err
}

// PlatformUnwrap implements meta.KeyService.
func (cl *Client) PlatformUnwrap(ctx context.Context, vault meta.VaultID, recipient string) ([]byte, error) {
	var out bytesResp
	err := cl.call(ctx, MethodPlatformUnwrap, platformUnwrapReq{Vault: vault, Recipient: recipient}, &out)
	return out.B, err
}
