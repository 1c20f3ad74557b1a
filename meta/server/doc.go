// Package server runs one meta voter: a hashicorp/raft node whose FSM is meta/fsm, whose
// log is meta/raftlog, and which implements meta.Service on the leader.
//
// Writes are proposed only on the leader, stamped with the leader's clock; a snapshot
// commit is proposed only after the leader has read the snapshot's reference lists and
// checked that every chunk is stored. Reads on the leader first confirm leadership
// (VerifyLeader, plus one Barrier per term so the FSM holds every earlier entry), which
// makes them linearizable. A follower answers every Service call except RaftStatus with
// a *meta.NotLeaderError carrying the leader's address; meta/metarpc forwards those.
//
// Config example (as node wires it):
//
//	srv, err := server.New(server.Config{
//		ID:         "m1",
//		Addr:       ep.Addr(),             // raft address = the node's QUIC address
//		Dir:        "/var/lib/coffer/meta",
//		Layer:      raftlayer.New(ep),
//		Bootstrap:  []meta.Server{{ID: "m1", Addr: "10.0.0.1:7000"}, ...},
//		Chunks:     chunks,                // for the commit check and GC marking
//		ChunkNotFound: func(err error) bool { return errors.Is(err, chunkstore.ErrNotFound) },
//		Logger:     log,
//		Now:        time.Now,
//		InitialMap: initialMap,
//	})
package server
