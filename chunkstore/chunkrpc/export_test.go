package chunkrpc

import "time"

// SetClock replaces the client's clock (tests only).
func SetClock(cl *Client, now func() time.Time) { cl.now = now }

// GrantVerifications reports how many restore grants s has verified (tests only).
func GrantVerifications(s *Server) uint64 {
	if s.grants == nil {
		return 0
	}
	return s.grants.verified.Load()
}
