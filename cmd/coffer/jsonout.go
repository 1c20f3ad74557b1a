package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
)

// The --json output shapes. Field names are part of the CLI's interface (docs/cli.md):
// add fields freely, never rename or remove one.

// initSummary is `coffer init --json`.
type initSummary struct {
	MessageType string    `json:"message_type"` // "summary"
	Vault       string    `json:"vault"`
	Created     time.Time `json:"created"`
	Profile     string    `json:"profile"` // "k+m"
	Chunker     string    `json:"chunker"`
	Management  string    `json:"key_management"` // customer or platform
}

// backupSummary is `coffer backup --json`.
type backupSummary struct {
	MessageType     string        `json:"message_type"` // "summary"
	SnapshotID      string        `json:"snapshot_id"`  // full hex
	Status          string        `json:"status"`       // "completed" or "partially failed"
	FilesNew        int64         `json:"files_new"`
	FilesChanged    int64         `json:"files_changed"`
	FilesUnmodified int64         `json:"files_unmodified"`
	DirsTotal       int64         `json:"dirs"`
	BytesProcessed  int64         `json:"bytes_processed"`
	BytesAdded      int64         `json:"bytes_added"`
	ChunksAdded     int64         `json:"chunks_added"`
	DurationS       float64       `json:"duration_s"`
	BytesRead       int64         `json:"bytes_read"`       // read from the sources
	Skipped         []skippedJSON `json:"skipped"`          // never null
	Blocks          *blocksJSON   `json:"blocks,omitempty"` // backup --block only
}

// blocksJSON is the block figures of a block backup.
type blocksJSON struct {
	Size      int64 `json:"size"`
	BlockSize int   `json:"block_size"`
	Total     int64 `json:"total"`
	Holes     int64 `json:"holes"`
	Read      int64 `json:"read"`
	Changed   int64 `json:"changed"`
	Reused    int64 `json:"reused"`
}

// skippedJSON is one file a backup could not read.
type skippedJSON struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

// Backup statuses (meta.SnapshotStats.Status).
const (
	statusCompleted = client.StatusCompleted
	statusPartial   = client.StatusPartiallyFailed
)

// newBackupSummary builds the summary of a finished backup. elapsed is the wall time
// measured by the CLI, used when the snapshot carries no duration.
func newBackupSummary(r client.BackupResult, elapsed time.Duration) backupSummary {
	st := r.Snapshot.Stats
	s := backupSummary{
		MessageType:     "summary",
		SnapshotID:      r.Snapshot.ID.String(),
		Status:          st.Status,
		FilesNew:        st.FilesNew,
		FilesChanged:    st.FilesChanged,
		FilesUnmodified: st.FilesUnmodified,
		DirsTotal:       st.DirsTotal,
		BytesProcessed:  st.BytesProcessed,
		BytesAdded:      st.BytesAdded,
		ChunksAdded:     st.ChunksAdded,
		DurationS:       st.DurationS,
		BytesRead:       r.BytesRead,
		Skipped:         make([]skippedJSON, 0, len(r.Skipped)),
	}
	if b := r.Blocks; b.BlockSize != 0 {
		s.Blocks = &blocksJSON{Size: b.Size, BlockSize: b.BlockSize, Total: b.Total, Holes: b.Holes,
			Read: b.Read, Changed: b.Changed, Reused: b.Reused}
	}
	for _, sk := range r.Skipped {
		s.Skipped = append(s.Skipped, skippedJSON{Path: sk.Path, Error: sk.Err})
	}
	if s.Status == "" {
		s.Status = statusCompleted
		if len(r.Skipped) > 0 || st.Skipped > 0 {
			s.Status = statusPartial
		}
	}
	if s.DurationS <= 0 {
		s.DurationS = elapsed.Seconds()
	}
	return s
}

// snapshotJSON is one element of `coffer snapshots --json`.
type snapshotJSON struct {
	ID      string             `json:"id"` // full hex
	ShortID string             `json:"short_id"`
	Vault   string             `json:"vault"`
	Time    time.Time          `json:"time"` // RFC 3339
	Start   time.Time          `json:"start"`
	Host    string             `json:"host"`
	Paths   []string           `json:"paths"` // never null
	Tags    []string           `json:"tags"`  // never null
	Parent  string             `json:"parent,omitempty"`
	Stats   meta.SnapshotStats `json:"stats"`
}

func newSnapshotJSON(s meta.Snapshot) snapshotJSON {
	out := snapshotJSON{
		ID:      s.ID.String(),
		ShortID: s.ID.Str(),
		Vault:   string(s.Vault),
		Time:    s.Time,
		Start:   s.Start,
		Host:    s.Host,
		Paths:   append([]string{}, s.Paths...),
		Tags:    append([]string{}, s.Tags...),
		Stats:   s.Stats,
	}
	if s.Parent != nil {
		out.Parent = s.Parent.String()
	}
	return out
}

// restoreSummary is `coffer restore --json`.
type restoreSummary struct {
	MessageType string  `json:"message_type"` // "summary"
	SnapshotID  string  `json:"snapshot_id"`
	Target      string  `json:"target"`
	Files       int64   `json:"files"`
	Dirs        int64   `json:"dirs"`
	Bytes       int64   `json:"bytes"`
	DurationS   float64 `json:"duration_s"`
}

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
