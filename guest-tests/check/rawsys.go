package check

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The walks and reads below use raw system calls (no entersyscall). Under
// TCG with one vCPU, a normal Go system call that blocks on a FUSE round
// trip lets sysmon hand the P to another thread, and the thread ping-pong
// that follows made Go 10-30 times slower than busybox at find and dd.
// Raw calls keep the P, so sysmon backs off and the guest runs at busybox
// speed. Nothing else runs in the guest while one is blocked; the host's
// timeout covers a request that never completes.

func rawPath(p string) (*byte, error) {
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

// rawLstat is lstat(2).
func rawLstat(p string, st *unix.Stat_t) error {
	b, err := rawPath(p)
	if err != nil {
		return err
	}
	_, _, e := unix.RawSyscall6(unix.SYS_NEWFSTATAT, atFDCWD(), uintptr(unsafe.Pointer(b)),
		uintptr(unsafe.Pointer(st)), unix.AT_SYMLINK_NOFOLLOW, 0, 0)
	return errnoErr(e)
}

// rawOpen is open(2) with O_CLOEXEC.
func rawOpen(p string, flags int) (int, error) {
	b, err := rawPath(p)
	if err != nil {
		return -1, err
	}
	fd, _, e := unix.RawSyscall6(unix.SYS_OPENAT, atFDCWD(), uintptr(unsafe.Pointer(b)),
		uintptr(flags|unix.O_CLOEXEC), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

func rawClose(fd int) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

// rawRead is read(2), retried on EINTR.
func rawRead(fd int, buf []byte) (int, error) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// rawReadFile streams the file at p into sink with reads of len(buf).
func rawReadFile(p string, buf []byte, sink func([]byte)) (int64, error) {
	fd, err := rawOpen(p, unix.O_RDONLY)
	if err != nil {
		return 0, err
	}
	defer rawClose(fd)
	var total int64
	for {
		n, err := rawRead(fd, buf)
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

// rawWalkDir calls fn for each name in directory p (without . and ..),
// batch by batch as getdents returns them, the way find(1) does. The
// interleaving matters for FUSE's readdirplus_auto: the kernel uses
// READDIRPLUS after the first batch only if lookups happened in between,
// so reading every name first and stat'ing afterwards would cost one
// LOOKUP per entry.
func rawWalkDir(p string, fn func(name string) error) error {
	fd, err := rawOpen(p, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer rawClose(fd)
	buf := make([]byte, 32<<10)
	var names []string
	for {
		n, _, e := unix.RawSyscall(unix.SYS_GETDENTS64, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
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
