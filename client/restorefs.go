package client

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// File system calls of a restore: everything relative to directory handles, nothing
// following a symlink (see Restore).

// joinRel returns name below rel, a path below the target ("" for the target).
func joinRel(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

// openat is unix.Openat retried on EINTR (an open can be interrupted on network and
// FUSE file systems).
func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags, mode)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// ftruncate is unix.Ftruncate retried on EINTR.
func ftruncate(fd int, size int64) error {
	for {
		err := unix.Ftruncate(fd, size)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// pwriteFull writes all of b at offset off of fd, as os.File.WriteAt does (short
// writes continued, EINTR retried), without an os.File: a restore writes most small
// files with this one call between their open and their close.
func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// processUmask returns the process's file mode creation mask from /proc/self/status
// (Linux 4.7 and later), or -1 when it cannot be read. Reading it this way does not set
// it, unlike umask(2), which other goroutines creating files would race with.
func processUmask() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil || m > 0o777 {
				return -1
			}
			return int(m)
		}
	}
	return -1
}

// openDirAt opens directory name in dirfd for reading without following a symlink,
// and returns it with its device and inode.
func openDirAt(dirfd int, name string) (int, inodeKey, error) {
	fd, err := openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, inodeKey{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, inodeKey{}, err
	}
	return fd, inodeKey{uint64(st.Dev), st.Ino}, nil
}

// unixMode returns the permission, setuid, setgid and sticky bits of m as chmod takes
// them.
func unixMode(m fs.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		mode |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		mode |= unix.S_ISVTX
	}
	return mode
}

// futimens sets the access and modification times of the open file fd to ts
// (utimensat with a NULL path, which x/sys/unix does not offer).
func futimens(fd int, ts unix.Timespec) error {
	times := [2]unix.Timespec{ts, ts}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&times)), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// chmodNoFollow sets the mode of name in dirfd, which is not a directory or regular
// file the caller holds open, without following a symlink: fchmodat2 where the kernel
// has it (Linux 6.6), else through an O_PATH handle of the entry that is checked not to
// be a symlink (as the C library emulates it).
func chmodNoFollow(dirfd int, name string, mode uint32) error {
	err := unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	fd, err := openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.ELOOP
	}
	return unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), mode, 0)
}

// dirChain opens directories below the target again, after the walk, keeping the
// chain of directories leading to the last one open: the walk order makes consecutive
// directories share most of their path. Each is opened with O_NOFOLLOW, and the one
// asked for must have the identity recorded when the restore created it.
type dirChain struct {
	r     *restorer
	top   *dirHandle // the target; not closed by the chain
	names []string
	fds   []int
	ids   []inodeKey
}

func (r *restorer) newDirChain(top *dirHandle) *dirChain { return &dirChain{r: r, top: top} }

// open returns a handle of directory rel (below the target; "" is the target), valid
// until the next call, having checked that it is the directory with identity want.
func (c *dirChain) open(rel string, want inodeKey) (int, error) {
	var parts []string
	if rel != "" {
		parts = strings.Split(rel, "/")
	}
	k := 0
	for k < len(c.names) && k < len(parts) && c.names[k] == parts[k] {
		k++
	}
	c.truncate(k)
	for _, name := range parts[k:] {
		parent := c.top.fd
		if n := len(c.fds); n > 0 {
			parent = c.fds[n-1]
		}
		fd, id, err := openDirAt(parent, name)
		if err != nil {
			return -1, c.r.replaced(strings.Join(parts[:len(c.fds)+1], "/"), err)
		}
		c.names, c.fds, c.ids = append(c.names, name), append(c.fds, fd), append(c.ids, id)
	}
	fd, id := c.top.fd, c.top.id
	if n := len(c.fds); n > 0 {
		fd, id = c.fds[n-1], c.ids[n-1]
	}
	if id != want {
		return -1, c.r.replaced(rel, fmt.Errorf("device and inode %d/%d, not %d/%d", id.dev, id.ino, want.dev, want.ino))
	}
	return fd, nil
}

// truncate closes the chain's directories from the k-th on.
func (c *dirChain) truncate(k int) {
	for _, fd := range c.fds[k:] {
		unix.Close(fd)
	}
	c.names, c.fds, c.ids = c.names[:k], c.fds[:k], c.ids[:k]
}

func (c *dirChain) close() { c.truncate(0) }
