package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
)

// ImageRestoreOptions says which file of a snapshot RestoreImage writes, and where.
type ImageRestoreOptions struct {
	// Path is the file in the snapshot ("/disk.img"); empty means the snapshot's only
	// entry, as a block backup makes.
	Path string
	// Target is a file that does not exist yet (it is created, sparse where the image
	// has holes) or an existing block device at least as large as the image (holes are
	// written as zeros).
	Target string
}

// RestoreImage writes one file of snap, typically a block image, to a new file or onto a
// block device. Every chunk is checked against its ID. The target is synced before
// RestoreImage returns. An existing regular file is refused (nothing is overwritten).
func (a *Agent) RestoreImage(ctx context.Context, snap meta.Snapshot, opts ImageRestoreOptions) (RestoreResult, error) {
	if err := a.check(); err != nil {
		return RestoreResult{}, err
	}
	start := a.cfg.Now()
	if opts.Target == "" {
		return RestoreResult{}, fmt.Errorf("%w: restore image: no target", ErrInvalid)
	}
	var n *tree.Node
	if opts.Path == "" {
		t, err := a.trees.Load(ctx, snap.Tree)
		if err != nil {
			return RestoreResult{}, err
		}
		if len(t.Nodes) != 1 {
			return RestoreResult{}, fmt.Errorf("%w: restore image: snapshot %s has %d top-level entries; name the file to restore", ErrInvalid, snap.ID.Str(), len(t.Nodes))
		}
		n = &t.Nodes[0]
	} else {
		var err error
		if n, err = a.lookup(ctx, snap, opts.Path); err != nil {
			return RestoreResult{}, fmt.Errorf("client: restore image: %w", err)
		}
	}
	if n == nil || n.Type != tree.TypeFile {
		return RestoreResult{}, fmt.Errorf("%w: restore image: %s is not a file", ErrInvalid, opts.Path)
	}
	target, err := filepath.Abs(opts.Target)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("%w: restore image: target %s: %v", ErrInvalid, opts.Target, err)
	}
	device := false
	var f *os.File
	fi, err := os.Stat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f, err = os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return RestoreResult{}, fmt.Errorf("client: restore image: %w", err)
		}
		if err := f.Truncate(n.Size); err != nil { // holes stay sparse
			f.Close()
			return RestoreResult{}, fmt.Errorf("client: restore image: %w", err)
		}
	case err != nil:
		return RestoreResult{}, fmt.Errorf("client: restore image: %w", err)
	case fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0:
		device = true
		if f, err = os.OpenFile(target, os.O_WRONLY, 0); err != nil {
			return RestoreResult{}, fmt.Errorf("client: restore image: %w", err)
		}
		size, err := unix.Seek(int(f.Fd()), 0, io.SeekEnd)
		if err != nil || size < n.Size {
			f.Close()
			return RestoreResult{}, fmt.Errorf("%w: restore image: device %s holds %d bytes, the image %d (%v)", ErrInvalid, target, size, n.Size, err)
		}
	default:
		return RestoreResult{}, fmt.Errorf("%w: restore image: %s exists and is not a block device; give a new file name", ErrInvalid, target)
	}
	var res RestoreResult
	off := int64(0)
	err = a.fetchOrdered(ctx, n.Content, n.Offset, func(e tree.Extent, data []byte) error {
		defer func() { off += int64(e.Len) }()
		if e.Hole {
			if !device {
				return nil
			}
			for left := int64(e.Len); left > 0; {
				k := min(left, int64(len(zeroPage)))
				if _, err := f.WriteAt(zeroPage[:k], off+int64(e.Len)-left); err != nil {
					return err
				}
				left -= k
			}
			return nil
		}
		if device {
			if _, err := f.WriteAt(data, off); err != nil {
				return err
			}
		} else if err := writeSparse(f, data, off); err != nil {
			return err
		}
		res.Bytes += int64(len(data))
		return nil
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return RestoreResult{}, fmt.Errorf("client: restore image to %s: %w", target, err)
	}
	res.Files = 1
	res.DurationS = a.cfg.Now().Sub(start).Seconds()
	return res, nil
}

// writeSparse writes data at off, skipping 4 KiB pages that are all zero so that a new
// file stays sparse where the image held zeros inside a data block.
func writeSparse(f *os.File, data []byte, off int64) error {
	const page = 4096
	for i := 0; i < len(data); {
		if allZero(data[i:min(i+page, len(data))]) {
			i += page
			continue
		}
		j := i + page
		for j < len(data) && !allZero(data[j:min(j+page, len(data))]) {
			j += page
		}
		j = min(j, len(data))
		if _, err := f.WriteAt(data[i:j], off+int64(i)); err != nil {
			return err
		}
		i = j
	}
	return nil
}
