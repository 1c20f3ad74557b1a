package chunkrpc

import "time"

// SetClock replaces the client's clock (tests only).
func SetClock(cl *Client, now func() time.Time) { cl.now = now }
