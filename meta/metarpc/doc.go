// Package metarpc carries meta.Service over the transport: a Handler that serves the
// "meta.*" methods from a meta server (forwarding to the Raft leader once when it is a
// follower), and a Client that implements meta.Service by finding the leader among the
// configured meta addresses.
//
// Bodies are CBOR (transport/wire). Errors cross the wire as transport codes and come
// back as errors matching the meta sentinels (errors.Is(err, meta.ErrNotFound), ...).
//
// Wiring, as node does it:
//
//	mux.Handle("meta", metarpc.NewServer(metaServer, endpoint, metaServer))
//	client := metarpc.NewClient(endpoint, []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"})
package metarpc
