package client

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dirEntry is one entry of a directory listed by statDir: its lstat information, or
// the error that lstat gave.
type dirEntry struct {
	name string
	fi   fs.FileInfo
	err  error
}

// statDir lists directory dir sorted by name, with each entry's lstat information
// taken relative to the open directory (fstatat), which spares the kernel a lookup of
// the whole path per entry: os.ReadDir followed by Info costs about twice as much on
// a tree of small files. The directory is closed before statDir returns, so a deep
// walk holds no descriptors. An error listing dir is returned; an error of one entry
// (it vanished, say) is recorded in that entry, as an *fs.PathError naming its path.
func statDir(dir string) ([]dirEntry, error) {
	f, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	ents := make([]dirEntry, len(names))
	cerr := rc.Control(func(fd uintptr) {
		for i, name := range names {
			ents[i].name = name
			var st unix.Stat_t
			if err := ignoringEINTR(func() error { return unix.Fstatat(int(fd), name, &st, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
				ents[i].err = &fs.PathError{Op: "lstat", Path: filepath.Join(dir, name), Err: err}
				continue
			}
			ents[i].fi = newStatInfo(name, &st)
		}
	})
	if cerr != nil {
		return nil, cerr
	}
	return ents, nil
}

// openDir opens directory dir (following a symlink, as os.Open does) for reading its
// names. os.Open would also offer the descriptor to the runtime's poller, which refuses
// directories: four fcntl calls and a failing epoll_ctl per directory walked; a
// descriptor from open(2) handed to os.NewFile costs one fcntl.
func openDir(dir string) (*os.File, error) {
	var fd int
	err := ignoringEINTR(func() error {
		var err error
		fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}

// statInfo is an fs.FileInfo built from fstatat, equal in every field to what
// os.Lstat returns for the same file (Sys is a *syscall.Stat_t, as there).
type statInfo struct {
	name string
	mode fs.FileMode
	st   syscall.Stat_t
}

func newStatInfo(name string, u *unix.Stat_t) *statInfo {
	fi := &statInfo{name: name, st: syscall.Stat_t{
		Dev: u.Dev, Ino: u.Ino, Nlink: u.Nlink, Mode: u.Mode, Uid: u.Uid, Gid: u.Gid,
		Rdev: u.Rdev, Size: u.Size, Blksize: u.Blksize, Blocks: u.Blocks,
		Atim: syscall.Timespec{Sec: u.Atim.Sec, Nsec: u.Atim.Nsec},
		Mtim: syscall.Timespec{Sec: u.Mtim.Sec, Nsec: u.Mtim.Nsec},
		Ctim: syscall.Timespec{Sec: u.Ctim.Sec, Nsec: u.Ctim.Nsec},
	}}
	// As os.fillFileStatFromSys.
	m := fs.FileMode(u.Mode & 0o777)
	switch u.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		m |= fs.ModeDevice
	case unix.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	}
	if u.Mode&unix.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if u.Mode&unix.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if u.Mode&unix.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	fi.mode = m
	return fi
}

func (fi *statInfo) Name() string      { return fi.name }
func (fi *statInfo) Size() int64       { return fi.st.Size }
func (fi *statInfo) Mode() fs.FileMode { return fi.mode }
func (fi *statInfo) ModTime() time.Time {
	return time.Unix(int64(fi.st.Mtim.Sec), int64(fi.st.Mtim.Nsec))
}
func (fi *statInfo) IsDir() bool { return fi.mode.IsDir() }
func (fi *statInfo) Sys() any    { return &fi.st }
