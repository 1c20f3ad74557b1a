package client

import (
	"fmt"
	"io/fs"
	"syscall"
	"time"
)

// sysStat is the part of a file's lstat information that fs.FileInfo does not carry.
type sysStat struct {
	uid, gid              uint32
	ctime                 int64 // change time, unix nanoseconds
	ino, nlink, dev, rdev uint64
}

// sysStatOf returns fi's sysStat; fi must come from lstat (os.Lstat or statDir).
func sysStatOf(path string, fi fs.FileInfo) (sysStat, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return sysStat{}, fmt.Errorf("no stat information for %s", path)
	}
	return sysStat{
		uid:   st.Uid,
		gid:   st.Gid,
		ctime: time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec)).UnixNano(),
		ino:   st.Ino,
		nlink: uint64(st.Nlink),
		dev:   uint64(st.Dev),
		rdev:  uint64(st.Rdev),
	}, nil
}
