package bench

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// ToolchainVersions are the successive Go releases used as datasets: the initial backup
// takes the first, the incremental backup the second (the third is fetched for the full
// run's second increment).
func ToolchainVersions() []string { return []string{"1.26.0", "1.26.1", "1.26.2"} }

// ProxyURL is where a toolchain release is fetched from (the Go module proxy).
func ProxyURL(version string) string {
	return "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go" + version + ".linux-amd64.zip"
}

// Dataset is one source tree to back up.
type Dataset struct {
	Name  string `json:"name"`
	Dir   string `json:"dir"` // tree root (its base name appears in snapshots)
	Files int64  `json:"files"`
	Bytes int64  `json:"bytes"`
	// Small counts files below the chunker's minimum (256 KiB): one chunk each.
	SmallFiles int64 `json:"small_files"`
	SmallBytes int64 `json:"small_bytes"`
}

// Datasets fetches (or finds cached under dataDir) the toolchain releases and unpacks
// them to dataDir/go<version>/go. If the first release cannot be fetched it falls back
// to a copy-free local tree, GOROOT, and says so in the returned note; later releases
// that fail are dropped with a note.
func Datasets(ctx context.Context, dataDir string, versions []string, logf func(string, ...any)) ([]Dataset, string, error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, "", fmt.Errorf("bench: data dir: %w", err)
	}
	var out []Dataset
	for i, v := range versions {
		dir := filepath.Join(dataDir, "go"+v)
		if err := fetchToolchain(ctx, dataDir, v, dir, logf); err != nil {
			if i == 0 {
				root := runtime.GOROOT()
				note := fmt.Sprintf("could not fetch go%s (%v); fell back to the local GOROOT %s (no incremental scenario)", v, err, root)
				ds, derr := scanDataset("GOROOT", root)
				if derr != nil {
					return nil, "", derr
				}
				return []Dataset{ds}, note, nil
			}
			logf("bench: go%s unavailable (%v); continuing without it", v, err)
			break
		}
		ds, err := scanDataset("go"+v, filepath.Join(dir, "go"))
		if err != nil {
			return nil, "", err
		}
		out = append(out, ds)
	}
	return out, "", nil
}

// fetchToolchain makes dir/go hold release v, downloading the zip when not cached.
func fetchToolchain(ctx context.Context, dataDir, v, dir string, logf func(string, ...any)) error {
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return nil
	}
	zipPath := filepath.Join(dataDir, "go"+v+".linux-amd64.zip")
	if _, err := os.Stat(zipPath); err != nil {
		logf("bench: downloading %s", ProxyURL(v))
		if err := download(ctx, ProxyURL(v), zipPath); err != nil {
			return err
		}
	}
	logf("bench: unpacking %s", zipPath)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := unzipStrip(zipPath, dir); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644)
}

func download(ctx context.Context, url, dst string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(dst + ".part")
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(dst+".part", dst)
}

// unzipStrip unpacks a module zip into dir, replacing the "module@version/" prefix with "go/", so
// the tree is dir/go/... . Files under bin/ and pkg/tool/ get mode 0755 (module zips
// carry no modes), the rest 0644.
func unzipStrip(zipPath, dir string) error {
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		return err
	}
	defer zr.Close()
	for _, f := range zr.File {
		// Module zip entries are "golang.org/toolchain@VERSION/FILE".
		i := strings.Index(f.Name, "@")
		j := -1
		if i >= 0 {
			j = strings.Index(f.Name[i:], "/")
		}
		if j < 0 || strings.HasSuffix(f.Name, "/") {
			continue
		}
		rel := "go/" + f.Name[i+j+1:]
		if !filepath.IsLocal(rel) {
			return fmt.Errorf("bench: unzip %s: unsafe path %q", zipPath, f.Name)
		}
		dst := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if strings.HasPrefix(rel, "go/bin/") || strings.HasPrefix(rel, "go/pkg/tool/") {
			mode = 0o755
		}
		if err := extract(f, dst, mode); err != nil {
			return fmt.Errorf("bench: unzip %s: %w", f.Name, err)
		}
	}
	return nil
}

func extract(f *zip.File, dst string, mode fs.FileMode) error {
	r, err := f.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.Chtimes(dst, f.Modified, f.Modified)
}

// scanDataset counts a tree's regular files and bytes.
func scanDataset(name, dir string) (Dataset, error) {
	ds := Dataset{Name: name, Dir: dir}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		ds.Files++
		ds.Bytes += info.Size()
		if info.Size() < 256<<10 {
			ds.SmallFiles++
			ds.SmallBytes += info.Size()
		}
		return nil
	})
	if err != nil {
		return Dataset{}, fmt.Errorf("bench: scan %s: %w", dir, err)
	}
	if ds.Files == 0 {
		return Dataset{}, fmt.Errorf("bench: dataset %s is empty", dir)
	}
	return ds, nil
}

// Corpus reads up to n bytes of ds's files (in walk order, so text and binaries mix as
// in the tree) as the stage benchmarks' input.
func Corpus(dir string, n int) ([]byte, error) {
	buf := make([]byte, 0, n)
	errFull := errors.New("full")
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		buf = append(buf, b[:min(len(b), n-len(buf))]...)
		if len(buf) >= n {
			return errFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return nil, fmt.Errorf("bench: corpus: %w", err)
	}
	if len(buf) == 0 {
		return nil, fmt.Errorf("bench: corpus: no data under %s", dir)
	}
	return buf, nil
}
