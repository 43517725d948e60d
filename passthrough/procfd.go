package passthrough

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// procFD reaches the inodes behind the daemon's own fds through an fd of
// /proc/self/fd, never through the path "/proc/self/fd": every access is
// relative to that directory fd and names one of our fd numbers ("N"), so
// it works wherever procfs is, or is not, in the daemon's mount namespace
// (a chroot into the share, a root that is the share itself), and nothing
// the guest made in the share can stand in for it.
type procFD struct {
	dir   *os.File // kept so that the caller's *os.File is not finalized
	fd    int
	owned bool // opened by New, closed by Close

	// xattrAt is true when the kernel has getxattrat and its siblings
	// (Linux 6.13): extended attributes of any inode are then reached as
	// (procfd, "N") in one call.
	xattrAt bool

	threadOnce sync.Once
	thread     *cwdThread
	threadErr  error
}

// newProcFD checks that dir is this process's /proc/self/fd (nil: open it)
// by finding the inode of known, an fd of ours, in it.
func newProcFD(dir *os.File, known int) (*procFD, error) {
	p := &procFD{dir: dir}
	if dir == nil {
		fd, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("passthrough: open /proc/self/fd (mount /proc, or pass Options.ProcSelfFD): %w", err)
		}
		p.dir, p.owned = os.NewFile(uintptr(fd), "/proc/self/fd"), true
	}
	p.fd = int(p.dir.Fd())
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(p.fd, &sfs); err != nil {
		p.close()
		return nil, fmt.Errorf("passthrough: statfs of the /proc/self/fd fd: %w", err)
	}
	if sfs.Type != unix.PROC_SUPER_MAGIC {
		p.close()
		return nil, fmt.Errorf("passthrough: ProcSelfFD is not on a procfs (magic %#x)", sfs.Type)
	}
	var want, got unix.Stat_t
	if err := unix.Fstat(known, &want); err != nil {
		p.close()
		return nil, err
	}
	if err := unix.Fstatat(p.fd, p.name(known), &got, 0); err != nil || got.Dev != want.Dev || got.Ino != want.Ino {
		p.close()
		return nil, fmt.Errorf("passthrough: ProcSelfFD is not this process's /proc/self/fd (fd %d: %v)", known, err)
	}
	_, err := listxattrat(p.fd, p.name(known), nil)
	p.xattrAt = !errors.Is(err, unix.ENOSYS)
	return p, nil
}

func (p *procFD) close() {
	if p.thread != nil {
		p.thread.stop()
	}
	if p.owned {
		p.dir.Close()
	}
}

// name is the entry of fd in /proc/self/fd: a number, never a guest string.
func (p *procFD) name(fd int) string { return strconv.Itoa(fd) }

// open opens the inode behind fd anew (following the magic link, which
// lands on the inode itself, even a symlink's).
func (p *procFD) open(fd int, flags int) (int, error) {
	return unix.Openat(p.fd, p.name(fd), flags|unix.O_CLOEXEC, 0)
}

// link links the inode behind fd as name in the directory dirfd.
func (p *procFD) link(fd, dirfd int, name string) error {
	return unix.Linkat(p.fd, p.name(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
}

// chmod changes the mode of the inode behind fd.
func (p *procFD) chmod(fd int, mode uint32) error {
	return unix.Fchmodat(p.fd, p.name(fd), mode, 0)
}

// utimes sets the times of the inode behind fd.
func (p *procFD) utimes(fd int, ts []unix.Timespec) error {
	return unix.UtimesNanoAt(p.fd, p.name(fd), ts, 0)
}

// truncate sets the size of the regular file behind fd: open for writing
// and ftruncate, as truncate(2) needs a path.
func (p *procFD) truncate(fd int, size int64) error {
	w, err := p.open(fd, unix.O_WRONLY|unix.O_NONBLOCK)
	if err != nil {
		return err
	}
	defer unix.Close(w)
	return unix.Ftruncate(w, size)
}

// cwd runs f on a thread whose working directory is /proc/self/fd, where
// "N" names the inode behind our fd N; the path forms of the xattr calls
// need it when the kernel has no *xattrat calls and the inode cannot be
// opened (symlinks, device nodes, FIFOs, sockets).
func (p *procFD) cwd(f func()) error {
	p.threadOnce.Do(func() { p.thread, p.threadErr = startCwdThread(p.fd) })
	if p.threadErr != nil {
		return p.threadErr
	}
	p.thread.do(f)
	return nil
}

// cwdThread is one OS thread with a working directory of its own (it
// unshares CLONE_FS, so every other thread keeps the process's), as
// virtiofsd keeps for the same purpose. Its goroutine never unlocks the
// thread, so Go discards the thread when the goroutine ends.
type cwdThread struct {
	reqs chan func()
}

func startCwdThread(dirfd int) (*cwdThread, error) {
	t := &cwdThread{reqs: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			ready <- fmt.Errorf("passthrough: xattr thread: unshare(CLONE_FS): %w", err)
			return
		}
		if err := unix.Fchdir(dirfd); err != nil {
			ready <- fmt.Errorf("passthrough: xattr thread: fchdir to /proc/self/fd: %w", err)
			return
		}
		ready <- nil
		for f := range t.reqs {
			f()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

func (t *cwdThread) do(f func()) {
	done := make(chan struct{})
	t.reqs <- func() { f(); close(done) }
	<-done
}

func (t *cwdThread) stop() { close(t.reqs) }

// xattrArgs is the kernel's struct xattr_args of getxattrat and setxattrat.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

func xattrBuf(b []byte) (unsafe.Pointer, uintptr) {
	if len(b) == 0 {
		return nil, 0
	}
	return unsafe.Pointer(&b[0]), uintptr(len(b))
}

// cstrings makes the NUL-terminated path and attribute name of an xattr
// call (EINVAL for a NUL inside either).
func cstrings(path, attr string) (p, a *byte, err error) {
	if p, err = unix.BytePtrFromString(path); err != nil {
		return nil, nil, err
	}
	a, err = unix.BytePtrFromString(attr)
	return p, a, err
}

// The *xattrat system calls (Linux 6.13), which x/sys numbers but does not
// wrap; at_flags 0: the magic link "N" is followed to the inode.

func getxattrat(dirfd int, path, attr string, dest []byte) (int, error) {
	p, a, err := cstrings(path, attr)
	if err != nil {
		return 0, err
	}
	ptr, n := xattrBuf(dest)
	args := xattrArgs{value: uint64(uintptr(ptr)), size: uint32(n)}
	r, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), 0,
		uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	runtime.KeepAlive(dest)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func setxattrat(dirfd int, path, attr string, data []byte, flags int) error {
	p, a, err := cstrings(path, attr)
	if err != nil {
		return err
	}
	ptr, n := xattrBuf(data)
	args := xattrArgs{value: uint64(uintptr(ptr)), size: uint32(n), flags: uint32(flags)}
	_, _, e := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), 0,
		uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	runtime.KeepAlive(data)
	if e != 0 {
		return e
	}
	return nil
}

func listxattrat(dirfd int, path string, dest []byte) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	ptr, n := xattrBuf(dest)
	r, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), 0,
		uintptr(ptr), n, 0)
	runtime.KeepAlive(dest)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func removexattrat(dirfd int, path, attr string) error {
	p, a, err := cstrings(path, attr)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), 0,
		uintptr(unsafe.Pointer(a)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// xattrCall is one extended attribute call in its three forms.
type xattrCall struct {
	at   func(dirfd int, name string) (int, error) // *xattrat relative to procfd
	fd   func(fd int) (int, error)                 // f*xattr on an opened fd
	path func(name string) (int, error)            // path form, relative to the cwd
}

// xattr makes c on the inode n, open (O_PATH) at fd: with the *xattrat
// calls where the kernel has them; otherwise on a fresh read-only fd for
// regular files and directories, and on the cwd thread for the rest,
// which cannot be opened.
func (p *procFD) xattr(n *inode, fd int, c xattrCall) (int, error) {
	if p.xattrAt {
		return c.at(p.fd, p.name(fd))
	}
	if n.isReg() || n.isDir() {
		rfd, err := p.open(fd, unix.O_RDONLY|unix.O_NONBLOCK)
		if err != nil {
			return 0, err
		}
		defer unix.Close(rfd)
		return c.fd(rfd)
	}
	var (
		sz  int
		err error
	)
	if terr := p.cwd(func() { sz, err = c.path(p.name(fd)) }); terr != nil {
		return 0, terr
	}
	return sz, err
}
