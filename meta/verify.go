package meta

import "fmt"

// MaxVerifyFindings bounds the findings a verify report keeps (the counts cover all).
const MaxVerifyFindings = 100

// VerifySchedule is a backup policy's verification schedule: a sampled check of the
// snapshots made since the last verify, and a periodic full check.
type VerifySchedule struct {
	// Schedule (cron, as BackupPolicy.Schedule) runs the sampled check.
	Schedule string `cbor:"schedule,omitempty" json:"schedule,omitempty"`
	// Sample is how many data chunks of each new snapshot the sampled check reads.
	Sample int `cbor:"sample,omitempty" json:"sample,omitempty"`
	// Full (cron), when set, runs a check of every chunk of every snapshot.
	Full string `cbor:"full,omitempty" json:"full,omitempty"`
}

// ValidateVerifySchedule checks v: valid cron specs, at least one of them, and a
// sample size in [0, 1<<20] (0 = DefaultVerifySample).
func ValidateVerifySchedule(v VerifySchedule) error {
	if v.Schedule == "" && v.Full == "" {
		return fmt.Errorf("%w: verify schedule without a sampled (--verify-schedule) or full (--verify-full) schedule", ErrInvalid)
	}
	for what, spec := range map[string]string{"verify schedule": v.Schedule, "full verify schedule": v.Full} {
		if spec == "" {
			continue
		}
		if _, err := ParseSchedule(spec); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if v.Sample < 0 || v.Sample > 1<<20 {
		return fmt.Errorf("%w: verify sample %d chunks per snapshot (want 0 to %d)", ErrInvalid, v.Sample, 1<<20)
	}
	return nil
}

// DefaultVerifySample is the chunks per snapshot a sampled check reads when the
// schedule does not say.
const DefaultVerifySample = 16

// VerifyReport is what a verify job found, kept on its own job record (Job.Report).
type VerifyReport struct {
	// Full is true for a check of every chunk, false for a sample.
	Full bool `cbor:"full,omitempty" json:"full"`
	// Snapshots checked, chunks read (distinct), bytes of plaintext read, and the chunks
	// found bad (missing, unreadable, or not matching their ID).
	Snapshots int   `cbor:"snapshots" json:"snapshots"`
	Chunks    int   `cbor:"chunks" json:"chunks"`
	Bytes     int64 `cbor:"bytes,omitempty" json:"bytes"`
	Bad       int   `cbor:"bad,omitempty" json:"bad"`
	// Findings are the first MaxVerifyFindings bad chunks.
	Findings []VerifyFinding `cbor:"findings,omitempty" json:"findings,omitempty"`
	// Through is the newest snapshot's time covered (cluster time of its commit, as
	// the snapshot records it): the next sampled check starts after it.
	Through string `cbor:"through,omitempty" json:"through,omitempty"`
}

// VerifyFinding is one bad chunk: the snapshot (hex) that references it, the chunk
// (hex) and what was wrong.
type VerifyFinding struct {
	Snapshot string `cbor:"snapshot" json:"snapshot_id"`
	Chunk    string `cbor:"chunk" json:"chunk"`
	Error    string `cbor:"error" json:"error"`
}

// ValidateVerifyReport checks r's bounds.
func ValidateVerifyReport(r VerifyReport) error {
	if len(r.Findings) > MaxVerifyFindings {
		return fmt.Errorf("%w: verify report with %d findings (at most %d)", ErrInvalid, len(r.Findings), MaxVerifyFindings)
	}
	if r.Snapshots < 0 || r.Chunks < 0 || r.Bytes < 0 || r.Bad < 0 || r.Bad < len(r.Findings) {
		return fmt.Errorf("%w: verify report counts (snapshots %d, chunks %d, bad %d, findings %d)", ErrInvalid, r.Snapshots, r.Chunks, r.Bad, len(r.Findings))
	}
	if len(r.Through) > 64 {
		return fmt.Errorf("%w: verify report through %q too long", ErrInvalid, r.Through)
	}
	for _, f := range r.Findings {
		if len(f.Snapshot) > 64 || len(f.Chunk) > 64 || len(f.Error) > 512 {
			return fmt.Errorf("%w: verify report finding too large", ErrInvalid)
		}
	}
	return nil
}
