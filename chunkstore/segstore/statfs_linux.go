package segstore

import "syscall"

// availableBytes returns the bytes available to unprivileged users on dir's filesystem.
func availableBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}
