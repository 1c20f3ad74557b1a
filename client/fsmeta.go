package client

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/cofferhq/coffer/client/tree"
)

// Metadata capture: what a backup records of a file besides its content. The part
// fs.FileInfo does not carry (owner, change time, inode, link count, devices) comes from
// sysStatOf, one per OS: fsmeta_linux.go. There is no fsmeta_other.go: the package builds
// on Linux only (statdir_linux.go lists directories with fstatat; restore uses mknodat,
// utimensat and O_PATH; read.go opens with O_NOATIME), so a fallback for this one
// function could be neither built nor tested.

// nodeFromInfo builds a node's metadata from lstat information.
func nodeFromInfo(name, path string, fi fs.FileInfo) (tree.Node, error) {
	st, err := sysStatOf(path, fi)
	if err != nil {
		return tree.Node{}, err
	}
	n := tree.Node{
		Name:       name,
		Mode:       uint32(fi.Mode()),
		UID:        st.uid,
		GID:        st.gid,
		ModTime:    fi.ModTime().UnixNano(),
		ChangeTime: st.ctime,
		Inode:      st.ino,
		Links:      st.nlink,
		DeviceID:   st.dev,
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		n.Type = tree.TypeFile
	case m.IsDir():
		n.Type = tree.TypeDir
		n.Links = 0 // directory link counts change with subdirectories; not recorded
	case m&fs.ModeSymlink != 0:
		n.Type = tree.TypeSymlink
		target, err := os.Readlink(path)
		if err != nil {
			return tree.Node{}, err
		}
		if target == "" {
			return tree.Node{}, fmt.Errorf("%s: empty symlink target", path)
		}
		n.LinkTarget = target
		n.Size = int64(len(target))
	case m&fs.ModeNamedPipe != 0:
		n.Type = tree.TypeFIFO
	case m&fs.ModeSocket != 0:
		n.Type = tree.TypeSocket
	case m&fs.ModeCharDevice != 0:
		n.Type = tree.TypeCharDev
		n.Rdev = st.rdev
	case m&fs.ModeDevice != 0:
		n.Type = tree.TypeDev
		n.Rdev = st.rdev
	default:
		return tree.Node{}, fmt.Errorf("%s: unsupported file type %v", path, m.Type())
	}
	if n.Links <= 1 {
		// NB: st_dev is only needed to group hardlinks, and it is not stable across
		// reboots on every file system; recording it elsewhere would defeat tree dedup.
		n.DeviceID = 0
	}
	if err := tree.ValidName(name); err != nil && name != "" {
		return tree.Node{}, err
	}
	return n, nil
}
