package chaos

import (
	"fmt"
	"math/rand"
	"time"
)

// Kind names a fault the nemesis injects.
type Kind string

// The fault kinds. A chunk-lane fault touches at most two chunk nodes, a meta-lane fault
// at most one meta server; an exclusive fault runs alone and leaves the envelope.
const (
	KillChunk       Kind = "kill-chunk"            // kill -9 one chunk node, start it after the hold
	PauseChunk      Kind = "pause-chunk"           // docker pause one chunk node 10-30 s
	TwoChunksDown   Kind = "two-chunks-down"       // kill -9 two chunk nodes at once
	DiskFull        Kind = "disk-full"             // fill chunk-7's small tmpfs data volume
	KillMetaLeader  Kind = "kill-meta-leader"      // kill -9 the meta leader
	PauseMeta       Kind = "pause-meta-leader"     // docker pause the meta leader 10-30 s
	PartitionLeader Kind = "partition-meta-leader" // disconnect the meta leader from the network
	PartitionChunks Kind = "partition-chunks-4-3"  // disconnect 3 of the 7 chunk nodes
	FullRestart     Kind = "full-restart"          // stop every node container, then start them all
)

// Fault is one planned fault: its kind, its hold time, and for chunk faults the chunk
// nodes it hits (meta faults find the leader when they start).
type Fault struct {
	Kind   Kind
	Hold   time.Duration
	Chunks []string
}

// Round is a step of the plan: faults that start together (one per lane, or one
// exclusive fault); the next round starts once every fault of this one has healed.
type Round struct {
	Faults []Fault
}

// Plan is the seeded fault schedule of a run.
type Plan struct {
	Seed   int64
	Rounds []Round
}

// Count is the number of faults in the plan.
func (p Plan) Count() int {
	n := 0
	for _, r := range p.Rounds {
		n += len(r.Faults)
	}
	return n
}

// ChunkNodes are the chunk node services of deploy/compose.yaml; SmallVolumeNode is the
// one whose data directory is the small tmpfs of deploy/chaos/compose.chaos.yaml.
const (
	chunkNodeCount  = 7
	SmallVolumeNode = "chunk-7"
)

// ChunkNode is the service name of chunk node i (1-based).
func ChunkNode(i int) string { return fmt.Sprintf("chunk-%d", i) }

// NewPlan draws the fault schedule for seed: pairRounds rounds of one chunk-lane and
// one meta-lane fault, plus the exclusive faults, each kind at least once.
// The same seed gives the same plan.
func NewPlan(seed int64, pairRounds int, exclusive []Kind) Plan {
	r := rand.New(rand.NewSource(seed))
	chunkKinds := []Kind{KillChunk, TwoChunksDown, PauseChunk, DiskFull}
	metaKinds := []Kind{KillMetaLeader, PartitionLeader, PauseMeta}
	hold := func(lo, hi int) time.Duration {
		return time.Duration(lo+r.Intn(hi-lo+1)) * time.Second
	}
	chunkFault := func(k Kind) Fault {
		f := Fault{Kind: k}
		perm := r.Perm(chunkNodeCount)
		switch k {
		case KillChunk:
			f.Hold, f.Chunks = hold(5, 20), []string{ChunkNode(perm[0] + 1)}
		case PauseChunk:
			f.Hold, f.Chunks = hold(10, 30), []string{ChunkNode(perm[0] + 1)}
		case TwoChunksDown:
			f.Hold, f.Chunks = hold(10, 25), []string{ChunkNode(perm[0] + 1), ChunkNode(perm[1] + 1)}
		case DiskFull:
			f.Hold, f.Chunks = hold(15, 30), []string{SmallVolumeNode}
		}
		return f
	}
	metaFault := func(k Kind) Fault {
		switch k {
		case PauseMeta:
			return Fault{Kind: k, Hold: hold(10, 30)}
		default:
			return Fault{Kind: k, Hold: hold(5, 20)}
		}
	}
	p := Plan{Seed: seed}
	for i := 0; i < pairRounds; i++ {
		var rd Round
		// Every kind at least once: the first rounds walk the kinds in order.
		ck := chunkKinds[r.Intn(len(chunkKinds))]
		if i < len(chunkKinds) {
			ck = chunkKinds[i]
		}
		rd.Faults = append(rd.Faults, chunkFault(ck))
		mk := metaKinds[r.Intn(len(metaKinds))]
		if i < len(metaKinds) {
			mk = metaKinds[i]
		}
		rd.Faults = append(rd.Faults, metaFault(mk))
		p.Rounds = append(p.Rounds, rd)
	}
	r.Shuffle(len(p.Rounds), func(i, j int) { p.Rounds[i], p.Rounds[j] = p.Rounds[j], p.Rounds[i] })
	// Exclusive faults go at evenly spaced places, never first: the workload has some
	// history before the envelope is left.
	for i, k := range exclusive {
		f := Fault{Kind: k, Hold: hold(15, 30)}
		if k == PartitionChunks {
			perm := r.Perm(chunkNodeCount)
			for _, n := range perm[:3] {
				f.Chunks = append(f.Chunks, ChunkNode(n+1))
			}
		}
		at := (i + 1) * len(p.Rounds) / (len(exclusive) + 1)
		if at == 0 {
			at = 1
		}
		if at > len(p.Rounds) {
			at = len(p.Rounds)
		}
		p.Rounds = append(p.Rounds[:at], append([]Round{{Faults: []Fault{f}}}, p.Rounds[at:]...)...)
	}
	return p
}
