package bench

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/chunker"
	"github.com/cofferhq/coffer/client/crypt"
)

// SmallFileStudy compares two layouts for small files on two successive releases,
// chunking plaintext with the real chunker and IDs: "per file" (today: every file is cut
// on its own, so a small file is one chunk) and "bundled" (each directory's files below
// the chunker's minimum are concatenated in name order into one content-defined
// stream; larger files are cut on their own as before).
type SmallFileStudy struct {
	Layout string `json:"layout"`
	// Chunks and Bytes are the distinct chunks of the first release.
	Chunks int64 `json:"chunks"`
	Bytes  int64 `json:"bytes"`
	// NewChunks and NewBytes are what the second release adds (chunks not in the first).
	NewChunks int64 `json:"new_chunks"`
	NewBytes  int64 `json:"new_bytes"`
	// SmallChunks counts chunks below 16 KiB in the first release (the ones whose 4+2
	// shards are tiny: a 16 KiB chunk makes 4 KiB shards).
	SmallChunks int64 `json:"small_chunks"`
}

// StudySmallFiles runs the study on two dataset trees.
func StudySmallFiles(dirA, dirB string) ([]SmallFileStudy, error) {
	var mk crypt.MasterKey
	keys := crypt.DeriveKeys(mk)
	p := chunker.DefaultParams()
	ch, err := chunker.New(p, keys.GearSeed())
	if err != nil {
		return nil, fmt.Errorf("bench: small files: %w", err)
	}
	buf := make([]byte, 2*p.Max)
	var out []SmallFileStudy
	agentMax, agentParams := client.BundleLayout()
	agentCh, err := chunker.New(agentParams, keys.GearSeed())
	if err != nil {
		return nil, fmt.Errorf("bench: small files: %w", err)
	}
	layouts := []struct {
		name    string
		fileMax int // 0: no bundles
		ch      *chunker.Chunker
	}{
		{"per file", 0, ch},
		{"bundled per directory", p.Min, ch},
		{fmt.Sprintf("bundled below %d KiB, FastCDC %d/%d/%d KiB (the agent's)", agentMax>>10, agentParams.Min>>10, agentParams.Avg>>10, agentParams.Max>>10), agentMax, agentCh},
	}
	for _, l := range layouts {
		a, err := chunkTree(dirA, l.fileMax, ch, l.ch, keys, buf)
		if err != nil {
			return nil, err
		}
		b, err := chunkTree(dirB, l.fileMax, ch, l.ch, keys, buf)
		if err != nil {
			return nil, err
		}
		s := SmallFileStudy{Layout: l.name}
		for _, n := range a {
			s.Chunks++
			s.Bytes += int64(n)
			if n < 16<<10 {
				s.SmallChunks++
			}
		}
		for id, n := range b {
			if _, ok := a[id]; !ok {
				s.NewChunks++
				s.NewBytes += int64(n)
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// chunkTree returns the distinct chunk IDs (with sizes) of a tree in one layout: files
// below fileMax bytes (none when 0) are bundled per directory and cut with bch, the others
// are cut on their own with ch.
func chunkTree(root string, fileMax int, ch, bch *chunker.Chunker, keys *crypt.Keys, buf []byte) (map[chunk.ID]int, error) {
	ids := map[chunk.ID]int{}
	add := func(c *chunker.Chunker, data []byte) error {
		return c.Split(bytes.NewReader(data), buf, func(c []byte) error {
			ids[keys.ChunkID(c)] = len(c)
			return nil
		})
	}
	// Files grouped by directory, in name order (WalkDir's lexical order).
	small := map[string][]string{}
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() < int64(fileMax) {
			dir := filepath.Dir(p)
			if _, ok := small[dir]; !ok {
				dirs = append(dirs, dir)
			}
			small[dir] = append(small[dir], p)
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil || len(data) == 0 {
			return err
		}
		return add(ch, data)
	})
	if err != nil {
		return nil, fmt.Errorf("bench: small files: %w", err)
	}
	sort.Strings(dirs)
	for _, dir := range dirs {
		var stream []byte
		for _, p := range small[dir] {
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("bench: small files: %w", err)
			}
			stream = append(stream, data...)
		}
		if len(stream) > 0 {
			if err := add(bch, stream); err != nil {
				return nil, err
			}
		}
	}
	return ids, nil
}
