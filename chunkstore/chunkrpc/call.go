package chunkrpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// call makes one RPC and maps its error: remote codes back to chunkstore sentinels, and
// unreachable peers to errors matching both transport.ErrUnreachable and
// chunkstore.ErrUnavailable.
func call(ctx context.Context, c transport.Caller, addr, method string, req, resp any) error {
	err := wire.Call(ctx, c, addr, method, req, resp)
	if err == nil {
		return nil
	}
	var te *transport.Error
	switch {
	case errors.As(err, &te):
		return fmt.Errorf("chunkrpc: %s on %s: %w", method, addr, Sentinels.Wrap(err))
	case errors.Is(err, transport.ErrUnreachable):
		return fmt.Errorf("chunkrpc: %s on %s: %w: %w", method, addr, chunkstore.ErrUnavailable, err)
	default:
		return fmt.Errorf("chunkrpc: %s on %s: %w", method, addr, err)
	}
}

// retryable reports whether another coordinator may succeed where one failed.
func retryable(err error) bool {
	if errors.Is(err, transport.ErrRefused) {
		return false // every node would refuse the same certificate
	}
	return errors.Is(err, transport.ErrUnreachable) || transport.CodeOf(err) == transport.Unavailable
}
