package check

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GuestTag is the build tag of the guest's binaries (guestinit): with it,
// the walks and reads below use raw system calls (RawSyscalls, set by
// sys_guest.go and sys_host.go); without it, ordinary ones.
//
// Why raw in the guest: under TCG with one vCPU, a normal Go system call
// that blocks on a FUSE round trip lets sysmon hand the P to another
// thread, and the thread ping-pong that follows made Go 10-30 times slower
// than busybox at find and dd. Raw calls keep the P, so sysmon backs off
// and the guest runs at busybox speed. Nothing else runs in the guest
// while one is blocked; the host's timeout covers a request that never
// completes.
//
// Why never raw on the host: a raw call that blocks on a FUSE mount never
// releases its P. When the FUSE server is in the same process (a test
// mounting an image with go-fuse), its goroutines then have no P to run
// on (with GOMAXPROCS=1 at once; otherwise as soon as a GC stop-the-world
// waits for the blocked thread), and the process hangs for good.
const GuestTag = "nvfsguest"

// sysCall is syscall(2) with three arguments: raw in the guest, ordinary
// elsewhere.
//
// Callers pass buffers as uintptr(unsafe.Pointer(p)). Only calls to
// assembly (unix.Syscall and kin) keep such a pointer valid by themselves:
// here the stack can move at sysCall's own prologue (a goroutine grows or,
// at a GC's request, shrinks its stack there), and a buffer on the caller's
// stack would move with it while the system call got its old address. The
// kernel then filled memory nobody read: guest walks lost a getdents batch
// (24 entries of one directory, through either daemon) and read zeros.
// go:uintptrescapes moves every such buffer to the heap, which never
// moves; TestSysCallsUnderMovingStacks checks it.
//
//go:uintptrescapes
func sysCall(trap, a1, a2, a3 uintptr) (uintptr, unix.Errno) {
	return sysCall6(trap, a1, a2, a3, 0, 0, 0)
}

// sysCall6 is syscall(2) with six arguments: raw in the guest, ordinary
// elsewhere. Buffers as for sysCall.
//
//go:uintptrescapes
func sysCall6(trap, a1, a2, a3, a4, a5, a6 uintptr) (uintptr, unix.Errno) {
	if RawSyscalls {
		r, _, e := unix.RawSyscall6(trap, a1, a2, a3, a4, a5, a6)
		return r, e
	}
	r, _, e := unix.Syscall6(trap, a1, a2, a3, a4, a5, a6)
	return r, e
}

func sysPath(p string) (*byte, error) {
	b, err := unix.BytePtrFromString(p)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", p, err)
	}
	return b, nil
}

// atFDCWD is AT_FDCWD (-100) as a system call argument.
func atFDCWD() uintptr {
	fd := unix.AT_FDCWD
	return uintptr(fd)
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// sysLstat is lstat(2).
func sysLstat(p string, st *unix.Stat_t) error {
	b, err := sysPath(p)
	if err != nil {
		return err
	}
	_, e := sysCall6(unix.SYS_NEWFSTATAT, atFDCWD(), uintptr(unsafe.Pointer(b)),
		uintptr(unsafe.Pointer(st)), unix.AT_SYMLINK_NOFOLLOW, 0, 0)
	return errnoErr(e)
}

// sysOpen is open(2) with O_CLOEXEC.
func sysOpen(p string, flags int) (int, error) {
	b, err := sysPath(p)
	if err != nil {
		return -1, err
	}
	fd, e := sysCall6(unix.SYS_OPENAT, atFDCWD(), uintptr(unsafe.Pointer(b)),
		uintptr(flags|unix.O_CLOEXEC), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

func sysClose(fd int) { _, _ = sysCall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

// sysRead is read(2), retried on EINTR.
func sysRead(fd int, buf []byte) (int, error) {
	for {
		n, e := sysCall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// sysReadFile streams the file at p into sink with reads of len(buf).
func sysReadFile(p string, buf []byte, sink func([]byte)) (int64, error) {
	fd, err := sysOpen(p, unix.O_RDONLY)
	if err != nil {
		return 0, err
	}
	defer sysClose(fd)
	var total int64
	for {
		n, err := sysRead(fd, buf)
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
		sink(buf[:n])
		total += int64(n)
	}
}

// sysWalkDir calls fn for each name in directory p (without . and ..),
// batch by batch as getdents returns them, the way find(1) does. The
// interleaving matters for FUSE's readdirplus_auto: the kernel uses
// READDIRPLUS after the first batch only if lookups happened in between,
// so reading every name first and stat'ing afterwards would cost one
// LOOKUP per entry.
func sysWalkDir(p string, fn func(name string) error) error {
	fd, err := sysOpen(p, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer sysClose(fd)
	buf := make([]byte, 32<<10)
	var names []string
	for {
		n, e := sysCall(unix.SYS_GETDENTS64, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		if n == 0 {
			return nil
		}
		names = parseDirents(buf[:n], names[:0])
		for _, name := range names {
			if err := fn(name); err != nil {
				return err
			}
		}
	}
}

// parseDirents appends the names in a getdents64 buffer (struct
// linux_dirent64: ino u64, off s64, reclen u16, type u8, name NUL-terminated).
func parseDirents(b []byte, names []string) []string {
	for len(b) >= 19 {
		reclen := int(binary.LittleEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			break
		}
		name := b[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		if s := string(name); s != "." && s != ".." {
			names = append(names, s)
		}
		b = b[reclen:]
	}
	return names
}
