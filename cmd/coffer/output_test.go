package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
)

func testID(b byte) chunk.ID {
	var id chunk.ID
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

// decodeKeys unmarshals one JSON object and returns it with its sorted keys.
func decodeKeys(t *testing.T, b []byte) (map[string]any, []string) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, b)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return m, keys
}

func requireKeys(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %v", k, m)
		}
	}
}

func TestBackupSummaryJSON(t *testing.T) {
	res := client.BackupResult{
		Snapshot: meta.Snapshot{
			ID: testID(0xa0),
			Stats: meta.SnapshotStats{
				FilesNew: 3, FilesChanged: 2, FilesUnmodified: 10, DirsTotal: 4,
				BytesProcessed: 5 << 20, BytesAdded: 1 << 20, ChunksAdded: 7,
				DurationS: 2.5, Status: statusPartial, Skipped: 1,
			},
		},
		Skipped: []client.Skipped{{Path: "/etc/shadow", Err: "permission denied"}},
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, newBackupSummary(res, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(buf.Bytes(), []byte("}\n")) || bytes.Count(buf.Bytes(), []byte("\n")) != 1 {
		t.Fatalf("want one line of JSON, got %q", buf.String())
	}
	m, keys := decodeKeys(t, buf.Bytes())
	requireKeys(t, m, "message_type", "snapshot_id", "status", "files_new", "files_changed",
		"files_unmodified", "bytes_processed", "bytes_added", "duration_s", "skipped")
	want := map[string]any{
		"message_type":     "summary",
		"snapshot_id":      testID(0xa0).String(),
		"status":           "partially failed",
		"files_new":        3.0,
		"files_changed":    2.0,
		"files_unmodified": 10.0,
		"dirs":             4.0,
		"bytes_processed":  float64(5 << 20),
		"bytes_added":      float64(1 << 20),
		"chunks_added":     7.0,
		"duration_s":       2.5, // the snapshot's own duration wins over the CLI's clock
		"bytes_read":       0.0,
		"skipped":          []any{map[string]any{"path": "/etc/shadow", "error": "permission denied"}},
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("summary keys %v\n got %v\nwant %v", keys, m, want)
	}
	if len(m["snapshot_id"].(string)) != 64 {
		t.Errorf("snapshot_id is not full hex: %v", m["snapshot_id"])
	}
}

func TestBackupSummaryDefaults(t *testing.T) {
	// No status or duration from the agent: derive them; skipped is [] not null.
	s := newBackupSummary(client.BackupResult{Snapshot: meta.Snapshot{ID: testID(1)}}, 1500*time.Millisecond)
	if s.Status != statusCompleted || s.DurationS != 1.5 || s.Skipped == nil {
		t.Fatalf("summary %+v", s)
	}
	b, _ := json.Marshal(s)
	if !strings.Contains(string(b), `"skipped":[]`) {
		t.Errorf("skipped not an empty list: %s", b)
	}
	s = newBackupSummary(client.BackupResult{Skipped: []client.Skipped{{Path: "x", Err: "y"}}}, time.Second)
	if s.Status != statusPartial {
		t.Errorf("skipped files but status %q", s.Status)
	}
}

func TestBackupHumanSummary(t *testing.T) {
	a, stdout, _ := newTestApp(nil)
	printBackupSummary(a, backupSummary{
		SnapshotID: testID(0x10).String(), Status: statusCompleted, FilesNew: 1, FilesChanged: 2, FilesUnmodified: 3,
		DirsTotal: 4, BytesProcessed: 100e6, BytesAdded: 1536, ChunksAdded: 2, DurationS: 2, Skipped: []skippedJSON{},
	})
	out := stdout.String()
	for _, want := range []string{
		"1 new, 2 changed, 3 unmodified",
		"95.4 MiB in 2.0s (50.0 MB/s)",
		"1.50 KiB in 2 new chunks",
		"snapshot 10111213 saved (completed)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Skipped") {
		t.Errorf("no skipped files but summary says so:\n%s", out)
	}

	stdout.Reset()
	printBackupSummary(a, backupSummary{SnapshotID: testID(0x10).String(), Status: statusPartial,
		Skipped: []skippedJSON{{Path: "/x/secret", Error: "permission denied"}, {Path: "/y", Error: "gone"}}})
	out = stdout.String()
	for _, want := range []string{"Skipped:    2 unreadable files:\n  /x/secret: permission denied\n  /y: gone\n", "(partially failed)"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestSnapshotsJSONShape(t *testing.T) {
	parent := testID(9)
	snaps := []meta.Snapshot{
		{ID: testID(1), Vault: "v", Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Host: "h1",
			Paths: []string{"/etc"}, Tags: []string{"nightly"}, Stats: meta.SnapshotStats{BytesAdded: 42, Status: "completed"}},
		{ID: testID(2), Vault: "v", Time: time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC), Host: "h2",
			Paths: []string{"/a", "/b"}, Parent: &parent},
	}
	var buf bytes.Buffer
	if err := writeSnapshotsJSON(&buf, snaps); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, buf.String())
	}
	if len(got) != 2 {
		t.Fatalf("%d elements", len(got))
	}
	for i, m := range got {
		requireKeys(t, m, "id", "time", "host", "paths", "tags", "stats")
		if m["id"] != snaps[i].ID.String() {
			t.Errorf("id %v, want full hex %s", m["id"], snaps[i].ID)
		}
		tm, err := time.Parse(time.RFC3339, m["time"].(string))
		if err != nil || !tm.Equal(snaps[i].Time) {
			t.Errorf("time %v: %v", m["time"], err)
		}
		if _, ok := m["tags"].([]any); !ok {
			t.Errorf("tags is %T, want a list", m["tags"])
		}
		stats, ok := m["stats"].(map[string]any)
		if !ok {
			t.Fatalf("stats is %T", m["stats"])
		}
		requireKeys(t, stats, "files_new", "bytes_added", "duration_s", "status")
	}
	if got[0]["stats"].(map[string]any)["bytes_added"] != 42.0 || got[1]["parent"] != parent.String() {
		t.Errorf("values lost: %v", got)
	}
	if _, ok := got[0]["parent"]; ok {
		t.Errorf("parent present without one: %v", got[0])
	}
	if _, ok := got[0]["refs"]; ok {
		t.Errorf("internal refs leaked into output: %v", got[0])
	}

	buf.Reset()
	if err := writeSnapshotsJSON(&buf, nil); err != nil || buf.String() != "[]\n" {
		t.Errorf("no snapshots: %q %v", buf.String(), err)
	}
}

func TestSnapshotsTable(t *testing.T) {
	var buf bytes.Buffer
	printSnapshots(&buf, []meta.Snapshot{
		{ID: testID(0xab), Time: time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC), Host: "web01",
			Paths: []string{"/etc", "/srv"}, Tags: []string{"a", "b"}, Stats: meta.SnapshotStats{BytesAdded: 3 << 30}},
	}, time.FixedZone("X", 3600))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header, row, footer:\n%s", buf.String())
	}
	if f := strings.Fields(lines[0]); !reflect.DeepEqual(f, []string{"ID", "TIME", "HOST", "TAGS", "ADDED", "PATHS"}) {
		t.Errorf("header %q", f)
	}
	want := []string{"abacadae", "2026-05-06", "08:08:09", "web01", "a,b", "3.00", "GiB", "/etc,", "/srv"}
	if f := strings.Fields(lines[1]); !reflect.DeepEqual(f, want) {
		t.Errorf("row %q, want %q", f, want)
	}
	if lines[2] != "1 snapshot" {
		t.Errorf("footer %q", lines[2])
	}
}

func TestRestoreSummaryJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := writeJSON(&buf, restoreSummary{MessageType: "summary", SnapshotID: testID(3).String(), Target: "/t",
		Files: 5, Dirs: 2, Bytes: 99, DurationS: 0.5}); err != nil {
		t.Fatal(err)
	}
	m, _ := decodeKeys(t, buf.Bytes())
	requireKeys(t, m, "message_type", "snapshot_id", "target", "files", "dirs", "bytes", "duration_s")
	if m["files"] != 5.0 || m["target"] != "/t" {
		t.Errorf("%v", m)
	}
	a, stdout, _ := newTestApp(nil)
	printRestoreSummary(a, restoreSummary{SnapshotID: testID(3).String(), Target: "/t", Files: 1, Dirs: 2, Bytes: 2e6, DurationS: 1})
	if got := stdout.String(); got != "restored snapshot 03040506 to /t: 1 file, 2 dirs, 1.91 MiB in 1.0s (2.0 MB/s)\n" {
		t.Errorf("human restore summary %q", got)
	}
}

func TestLsFormatting(t *testing.T) {
	mtime := time.Date(2025, 12, 31, 23, 59, 58, 0, time.UTC).UnixNano()
	tests := []struct {
		e        client.Entry
		wantLine string
		wantMode string
	}{
		{client.Entry{Path: "/etc/hosts", Node: tree.Node{Name: "hosts", Type: tree.TypeFile, Mode: 0o644, UID: 0, GID: 0, Size: 221, ModTime: mtime}},
			"-rw-r--r--     0/0              221 2025-12-31 23:59:58 /etc/hosts", "0644"},
		{client.Entry{Path: "/tmp", Node: tree.Node{Name: "tmp", Type: tree.TypeDir, Mode: uint32(fs.ModeDir | fs.ModeSticky | 0o777), ModTime: mtime}},
			"drwxrwxrwt     0/0                0 2025-12-31 23:59:58 /tmp", "1777"},
		{client.Entry{Path: "/bin/su", Node: tree.Node{Name: "su", Type: tree.TypeFile, Mode: uint32(fs.ModeSetuid | 0o755), UID: 1000, GID: 100, Size: 5, ModTime: mtime}},
			"-rwsr-xr-x  1000/100              5 2025-12-31 23:59:58 /bin/su", "4755"},
		{client.Entry{Path: "/l", Node: tree.Node{Name: "l", Type: tree.TypeSymlink, Mode: uint32(fs.ModeSymlink | 0o777), LinkTarget: "target", ModTime: mtime}},
			"lrwxrwxrwx     0/0                0 2025-12-31 23:59:58 /l -> target", "0777"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		if err := writeLsLine(&buf, tt.e, time.UTC); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSuffix(buf.String(), "\n"); got != tt.wantLine {
			t.Errorf("ls line\n got %q\nwant %q", got, tt.wantLine)
		}
		j := newEntryJSON(tt.e)
		if j.Mode != tt.wantMode || j.Path != tt.e.Path || j.Type != string(tt.e.Node.Type) || !j.ModTime.Equal(time.Unix(0, mtime)) {
			t.Errorf("json %+v, want mode %s", j, tt.wantMode)
		}
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, newEntryJSON(tests[0].e)); err != nil {
		t.Fatal(err)
	}
	m, _ := decodeKeys(t, buf.Bytes())
	requireKeys(t, m, "path", "name", "type", "mode", "uid", "gid", "size", "mtime")
	if _, ok := m["link_target"]; ok {
		t.Errorf("link_target on a file: %v", m)
	}
}

func TestInitSummaryJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := writeJSON(&buf, initSummary{MessageType: "summary", Vault: "v", Profile: "4+2", Chunker: "fastcdc"}); err != nil {
		t.Fatal(err)
	}
	m, _ := decodeKeys(t, buf.Bytes())
	requireKeys(t, m, "message_type", "vault", "created", "profile", "chunker")
}
