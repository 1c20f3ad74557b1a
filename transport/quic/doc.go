// Package quic is Coffer's network endpoint: RPC and extra stream protocols over QUIC
// (quic-go) with mutual TLS 1.3 under the cluster CA, all on one UDP port.
//
// An Endpoint binds one UDP socket and uses one quic-go Transport both to accept and to
// dial. ALPN separates protocols on that port: "coffer-rpc/1" carries RPCs (one stream per
// call, framed by transport/wire), and any protocol registered with Listener (such as
// "coffer-raft/1") carries raw streams surfaced as net.Conn naming their peer. Only peers
// whose certificate role is a node's ("node" or "meta") may connect with a non-RPC
// protocol; the protocol's user decides further (meta servers admit only meta authority
// to Raft).
//
// "coffer-enroll/1" is the one protocol a client without a certificate can complete a
// handshake on (an agent enrolling; see pki.NewAnonymousIdentity), and only on an endpoint
// with Config.AnonymousMethods (meta nodes); others refuse it at the handshake. Its peers
// are anonymous and reach the handler only for Config.AnonymousMethods; any other method is
// answered Unauthenticated. Config.Anonymous bounds them before anything is authenticated:
// body size, read time, requests per connection, connections per address and in all. On
// every other protocol a missing or bad client certificate fails the handshake, logged as
// "tls handshake refused" with the remote address. Refusals of unauthenticated traffic are
// logged at most once per address and kind per interval.
//
// A request's header (method and body length) is read first: the anonymous checks and
// Config.CheckPeer (revocation, authorization) decide on it before any of its body is
// read, and a refused request is answered at once, its body never read.
//
// Example:
//
//	id, _ := pki.LoadIdentity("ca.pem", "node.pem", "node.key")
//	mux := transport.NewMux()
//	ep, err := quic.New(quic.Config{ListenAddr: "0.0.0.0:7400", Identity: id, Handler: mux})
//	...
//	reply, err := ep.Call(ctx, "10.0.0.2:7400", "shard.Stats", body)
//	...
//	ep.Close()
//
// No 0-RTT is used: every request runs on a fully authenticated connection, so nothing can
// be replayed.
package quic
