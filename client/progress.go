package client

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Progress is a running total, reported to a Progress callback about every 100 ms and
// once at the end.
type Progress struct {
	Files, Dirs int64
	Bytes       int64  // processed: content covered so far, read or not
	BytesAdded  int64  // sealed bytes uploaded
	Current     string // a path being worked on
	// Backup only:
	BytesRead    int64 // read from the sources
	BytesChanged int64 // plaintext bytes of chunks that were not stored before
	// TotalFiles and TotalBytes are what a scan running beside the backup has found so
	// far (regular files and their sizes); final once ScanDone is true. The scan starts a
	// second into the backup; a backup that is done sooner reports its own counts as
	// the totals (with ScanDone) in its last report.
	TotalFiles, TotalBytes int64
	ScanDone               bool
}

// startProgress reports progress every 100 ms until the returned stop function is
// called; stop reports once more and waits for the reporting goroutine.
func (b *backup) startProgress(fn func(Progress)) (stop func()) {
	if fn == nil {
		return func() {}
	}
	snap := func() Progress {
		p := Progress{Files: b.files.Load(), Dirs: b.dirs.Load(), Bytes: b.bytes.Load(), BytesAdded: b.bytesAdded.Load(),
			BytesRead: b.bytesRead.Load(), TotalFiles: b.totalFiles.Load(), TotalBytes: b.totalBytes.Load(), ScanDone: b.scanDone.Load()}
		if !p.ScanDone && b.walked.Load() {
			// Done before the scan: the backup's own counts are the totals.
			p.TotalFiles, p.TotalBytes, p.ScanDone = p.Files, p.Bytes, true
		}
		if up := b.upPtr.Load(); up != nil {
			st := up.Stats()
			if p.BytesAdded == 0 {
				p.BytesAdded = st.BytesAdded
			}
			p.BytesChanged = st.PlainAdded
		}
		if c := b.current.Load(); c != nil {
			p.Current = *c
		}
		return p
	}
	return runProgress(fn, snap)
}

// scanDelay is how long a backup runs before its progress scan starts: a backup that
// is done sooner (typically an unchanged tree, whose walk costs about what the scan
// does) never needs an ETA, and its final progress report gives its own totals.
const scanDelay = time.Second

// startScan, when on, counts the regular files below roots and their sizes beside the
// backup (for the progress ETA), without opening any file, starting scanDelay after the
// call. stop cancels it and waits.
func (b *backup) startScan(ctx context.Context, on bool, roots []root) (stop func()) {
	if !on {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		delay := time.NewTimer(scanDelay)
		defer delay.Stop()
		select {
		case <-delay.C:
		case <-ctx.Done():
			return
		}
		for _, r := range roots {
			fi, err := os.Lstat(r.abs)
			if err != nil {
				continue
			}
			if fi.Mode().IsRegular() {
				b.totalFiles.Add(1)
				b.totalBytes.Add(fi.Size())
				continue
			}
			if fi.IsDir() && b.scanDir(ctx, r.abs) != nil {
				return
			}
		}
		b.scanDone.Store(true)
	})
	return func() { cancel(); wg.Wait() }
}

// scanDir adds the regular files below dir to the scan's totals, listing each directory
// with statDir (lstat relative to the open directory, as the backup's walk does) and
// not following symlinks. Unreadable directories and entries are skipped; only a
// cancelled ctx stops it, with ctx's error.
func (b *backup) scanDir(ctx context.Context, dir string) error {
	ents, err := statDir(dir)
	if err != nil {
		return ctx.Err()
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case e.err != nil:
		case e.fi.Mode().IsRegular():
			b.totalFiles.Add(1)
			b.totalBytes.Add(e.fi.Size())
		case e.fi.IsDir():
			if err := b.scanDir(ctx, filepath.Join(dir, e.name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// sequence returns a function calling each of fns once, in order.
func sequence(fns ...func()) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			for _, f := range fns {
				f()
			}
		})
	}
}

func runProgress(fn func(Progress), snap func() Progress) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				fn(snap())
			case <-done:
				fn(snap())
				return
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() { close(done); wg.Wait() })
	}
}
