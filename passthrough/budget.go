package passthrough

import (
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdBudget bounds the fds the guest makes the daemon hold: open files and
// directories, and the O_PATH fds pinned for inodes without file handles.
// The LRU of O_PATH fds (fdCache) is bounded on its own. Below
// RLIMIT_NOFILE a reserve stays for the daemon's own fds (vhost-user
// messages carry kick, call and memory fds; blob files; the API), so a
// guest holding everything it may still leaves the daemon working. Past
// the budget the guest gets ENFILE: the system-wide error, since the bound
// is the daemon's, not the guest process's.
type fdBudget struct {
	max  int64
	used atomic.Int64
}

// take counts one guest-held fd, or answers ENFILE when none is left.
func (b *fdBudget) take() error {
	if b.used.Add(1) > b.max {
		b.used.Add(-1)
		return syscall.ENFILE
	}
	return nil
}

// give returns one fd counted by take.
func (b *fdBudget) give() { b.used.Add(-1) }

// defaultFdBudget leaves a reserve of an eighth of RLIMIT_NOFILE (at least
// 128) and the LRU's fds out of the soft limit for the guest's open files.
func defaultFdBudget(cacheMax int) int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	reserve := max(uint64(128), lim.Cur/8)
	if lim.Cur <= reserve+uint64(cacheMax)+16 {
		return 16
	}
	return int(lim.Cur - reserve - uint64(cacheMax))
}

// OpenFiles reports how many fds the guest holds against the budget and
// the budget itself.
func (fs *FS) OpenFiles() (used, budget int) {
	return int(fs.budget.used.Load()), int(fs.budget.max)
}

// counted opens a guest-held fd with open, within the budget. The fd is
// handed to addFile, or closed with uncount.
func (fs *FS) counted(open func() (int, error)) (int, error) {
	if err := fs.budget.take(); err != nil {
		return -1, err
	}
	fd, err := open()
	if err != nil {
		fs.budget.give()
	}
	return fd, err
}

// uncount closes a fd from counted that never reached addFile.
func (fs *FS) uncount(fd int) {
	unix.Close(fd)
	fs.budget.give()
}
