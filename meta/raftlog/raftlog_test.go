package raftlog

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

func TestLogAndStableSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir)
	logs, stable, c := st, st, st
	if err != nil {
		t.Fatal(err)
	}
	var batch []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		batch = append(batch, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}})
	}
	if err := logs.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if err := stable.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := stable.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = Open(dir)
	logs, stable, c = st, st, st
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	last, err := logs.LastIndex()
	if err != nil || last != 10 {
		t.Fatalf("last index %d, %v; want 10", last, err)
	}
	var l raft.Log
	if err := logs.GetLog(7, &l); err != nil || !bytes.Equal(l.Data, []byte{7}) {
		t.Fatalf("log 7: %v %v", l.Data, err)
	}
	if term, err := stable.GetUint64([]byte("CurrentTerm")); err != nil || term != 7 {
		t.Fatalf("term %d, %v; want 7", term, err)
	}
	if v, err := stable.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Fatalf("vote %q, %v", v, err)
	}
	// Raft truncates the head after a snapshot.
	if err := logs.DeleteRange(1, 5); err != nil {
		t.Fatal(err)
	}
	if first, _ := logs.FirstIndex(); first != 6 {
		t.Fatalf("first index %d after DeleteRange, want 6", first)
	}
}

// TestSuffixTruncationSurvivesReopen: raft clears a conflicting log tail after a leader
// change; the log must still open and serve every remaining entry afterwards (raft-wal
// v0.4.0 failed exactly this with "sealed segment has no index block").
func TestSuffixTruncationSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	logs, err := Open(dir)
	c := logs
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 20; i++ {
		if err := logs.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := logs.DeleteRange(18, 20); err != nil { // suffix
		t.Fatal(err)
	}
	if err := logs.StoreLogs([]*raft.Log{{Index: 18, Term: 2, Type: raft.LogCommand, Data: []byte{99}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	logs, err = Open(dir)
	c = logs
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := uint64(1); i <= 18; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			t.Fatalf("log %d after suffix truncation and reopen: %v", i, err)
		}
		want := byte(i)
		if i == 18 {
			want = 99
		}
		if l.Data[0] != want {
			t.Fatalf("log %d holds %d, want %d", i, l.Data[0], want)
		}
	}
	if last, _ := logs.LastIndex(); last != 18 {
		t.Fatalf("last index %d, want 18", last)
	}
}

// TestCompactRemovesDeletedEntries: bbolt keeps a deleted entry's bytes in its freed
// page; after Compact no byte of it is left in the file, and the live entries, the stable
// values and later appends work as before.
func TestCompactRemovesDeletedEntries(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	secret := bytes.Repeat([]byte("wrapped key 0123456789"), 3)
	var batch []*raft.Log
	for i := uint64(1); i <= 200; i++ {
		data := []byte{byte(i)}
		if i == 3 {
			data = secret
		}
		batch = append(batch, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data})
	}
	if err := st.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if err := st.SetUint64([]byte("CurrentTerm"), 4); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteRange(1, 150); err != nil {
		t.Fatal(err)
	}
	file := func() []byte {
		b, err := os.ReadFile(filepath.Join(dir, fileName))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Contains(file(), secret) {
		t.Log("bbolt no longer keeps freed pages' bytes: Compact is belt and braces")
	}
	if err := st.Compact(); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(file(), secret) {
		t.Fatal("a deleted entry's bytes survive Compact")
	}
	if first, err := st.FirstIndex(); err != nil || first != 151 {
		t.Fatalf("first index %d, %v after Compact; want 151", first, err)
	}
	var l raft.Log
	if err := st.GetLog(200, &l); err != nil || !bytes.Equal(l.Data, []byte{200}) {
		t.Fatalf("log 200 after Compact: %v %v", l.Data, err)
	}
	if term, err := st.GetUint64([]byte("CurrentTerm")); err != nil || term != 4 {
		t.Fatalf("term %d, %v after Compact; want 4", term, err)
	}
	if err := st.StoreLog(&raft.Log{Index: 201, Term: 2, Type: raft.LogCommand}); err != nil {
		t.Fatal(err)
	}
	if last, err := st.LastIndex(); err != nil || last != 201 {
		t.Fatalf("last index %d, %v; want 201", last, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.LastIndex(); err != ErrClosed {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}
