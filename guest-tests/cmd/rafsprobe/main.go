// Command rafsprobe runs inside a guest-tests guest, started by a KindExec
// step from the tree being served (so the harness's initramfs stays as it
// is). It does what the harness's step kinds do not:
//
//	rafsprobe reread FILE N     drop the caches, then read FILE N times
//	                            (open, 1 MiB reads, close) and print one
//	                            "NVFS-REREAD {json}" line per read
//	rafsprobe erofs FILE DIR    every write-type operation on an existing
//	                            file FILE and an empty directory DIR must
//	                            fail with EROFS (on a mount that is not
//	                            "ro", so the answer comes from the daemon)
//	rafsprobe attrs ROOT JSON   every path in JSON (relative to ROOT) must
//	                            have that mtime (s, ns) and, for devices,
//	                            that rdev: what the manifest does not compare
//	rafsprobe keepcache FILE kept|dropped
//	                            drop the caches, read FILE, close it, open
//	                            it again and count its pages in the page
//	                            cache (mincore): all of them must be there
//	                            ("kept": the daemon answered OPEN with
//	                            FOPEN_KEEP_CACHE) or none ("dropped")
//
// It exits non-zero on any failure. Build it with CGO_ENABLED=0.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

// MarkReread prefixes the reread lines on the console.
const MarkReread = "NVFS-REREAD "

// Read is one read of the whole file.
type Read struct {
	N     int     `json:"n"` // 1 = first (cold) read
	Bytes int64   `json:"bytes"`
	Secs  float64 `json:"secs"`
	MBps  float64 `json:"MBps"` // 10^6 bytes per second
}

func main() {
	var err error
	switch {
	case len(os.Args) == 4 && os.Args[1] == "reread":
		err = reread(os.Args[2], os.Args[3])
	case len(os.Args) == 4 && os.Args[1] == "erofs":
		err = erofs(os.Args[2], os.Args[3])
	case len(os.Args) == 4 && os.Args[1] == "attrs":
		err = attrs(os.Args[2], os.Args[3])
	case len(os.Args) == 4 && os.Args[1] == "keepcache":
		err = keepCache(os.Args[2], os.Args[3])
	default:
		err = errors.New("usage: rafsprobe reread FILE N | erofs FILE DIR | attrs ROOT JSON | keepcache FILE kept|dropped")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rafsprobe:", err)
		os.Exit(1)
	}
}

func reread(file, count string) error {
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 {
		return fmt.Errorf("reread: bad count %q", count)
	}
	if err := check.DropCaches(); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var size int64 = -1
	for i := 1; i <= n; i++ {
		t0 := time.Now()
		got, err := readAll(file, buf)
		secs := time.Since(t0).Seconds()
		if err != nil {
			return fmt.Errorf("reread %s (read %d): %w", file, i, err)
		}
		if size >= 0 && got != size {
			return fmt.Errorf("reread %s: read %d gave %d bytes, the first %d", file, i, got, size)
		}
		size = got
		line, _ := json.Marshal(Read{N: i, Bytes: got, Secs: secs, MBps: float64(got) / secs / 1e6})
		fmt.Printf("%s%s\n", MarkReread, line)
	}
	return nil
}

// readAll opens, reads to the end and closes: the close matters, since
// what survives it in the page cache is what the benchmark measures.
func readAll(p string, buf []byte) (int64, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var total int64
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
		total += int64(n)
	}
}

func erofs(file, dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(file, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("erofs: %s must be an existing regular file (%v)", file, err)
	}
	if err := unix.Lstat(dir, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("erofs: %s must be an existing directory (%v)", dir, err)
	}
	parent := filepath.Dir(file)
	openFlags := func(flags int) func() error {
		return func() error {
			fd, err := unix.Open(file, flags|unix.O_CLOEXEC, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}
	}
	ops := []struct {
		what string
		do   func() error
	}{
		{"open O_WRONLY", openFlags(unix.O_WRONLY)},
		{"open O_RDWR", openFlags(unix.O_RDWR)},
		{"open O_RDONLY|O_TRUNC", openFlags(unix.O_RDONLY | unix.O_TRUNC)},
		{"open O_WRONLY|O_APPEND", openFlags(unix.O_WRONLY | unix.O_APPEND)},
		{"truncate", func() error { return unix.Truncate(file, 0) }},
		{"chmod", func() error { return unix.Chmod(file, 0o600) }},
		{"chown", func() error { return unix.Chown(file, 4242, 4242) }},
		{"utimes", func() error {
			return unix.UtimesNano(file, []unix.Timespec{{Sec: 1}, {Sec: 1}})
		}},
		{"setxattr", func() error { return unix.Setxattr(file, "user.nvfs.ro", []byte("x"), 0) }},
		{"removexattr", func() error { return unix.Removexattr(file, "user.nvfs.ro") }},
		{"unlink", func() error { return unix.Unlink(file) }},
		{"rename", func() error { return unix.Rename(file, file+".renamed") }},
		{"rename into a directory", func() error { return unix.Rename(file, filepath.Join(dir, "moved")) }},
		{"link", func() error { return unix.Link(file, filepath.Join(parent, "nvfs-ro-hardlink")) }},
		{"mknod fifo", func() error { return unix.Mknod(filepath.Join(dir, "nvfs-ro-fifo"), unix.S_IFIFO|0o644, 0) }},
		{"create", func() error {
			fd, err := unix.Open(filepath.Join(dir, "nvfs-ro-new"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"mkdir", func() error { return unix.Mkdir(filepath.Join(dir, "nvfs-ro-dir"), 0o755) }},
		{"symlink", func() error { return unix.Symlink("x", filepath.Join(dir, "nvfs-ro-link")) }},
		{"rmdir", func() error { return unix.Rmdir(dir) }},
		{"chmod dir", func() error { return unix.Chmod(dir, 0o700) }},
	}
	var e check.Errs
	for _, op := range ops {
		if err := op.do(); !errors.Is(err, unix.EROFS) {
			e.Addf("%s: %v, want EROFS", op.what, err)
		}
	}
	// nothing may have changed
	var after unix.Stat_t
	if err := unix.Lstat(file, &after); err != nil {
		e.Addf("%s is gone after the refused writes: %v", file, err)
	}
	if e.Empty() {
		fmt.Printf("rafsprobe: %d write operations refused with EROFS\n", len(ops))
		return nil
	}
	for _, s := range e.Strings() {
		fmt.Println("rafsprobe:", s)
	}
	return errors.New("writes not refused with EROFS")
}

func keepCache(file, want string) error {
	if want != "kept" && want != "dropped" {
		return fmt.Errorf("keepcache: want kept or dropped, not %q", want)
	}
	if err := check.DropCaches(); err != nil {
		return err
	}
	size, err := readAll(file, make([]byte, 1<<20))
	if err != nil {
		return fmt.Errorf("keepcache: first read: %w", err)
	}
	if size == 0 {
		return fmt.Errorf("keepcache: %s is empty", file)
	}
	fd, err := unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("keepcache: reopen: %w", err)
	}
	defer unix.Close(fd)
	m, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("keepcache: mmap: %w", err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	// x/sys/unix has no wrapper for mincore(2)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)),
		uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return fmt.Errorf("keepcache: mincore: %w", e)
	}
	resident := 0
	for _, v := range vec {
		resident += int(v & 1)
	}
	fmt.Printf("rafsprobe: %s: %d of %d pages still cached after close and reopen\n", file, resident, len(vec))
	switch {
	case want == "kept" && resident != len(vec):
		return fmt.Errorf("keepcache: %d of %d pages cached after reopen, want all (FOPEN_KEEP_CACHE)", resident, len(vec))
	case want == "dropped" && resident != 0:
		return fmt.Errorf("keepcache: %d of %d pages cached after reopen, want none", resident, len(vec))
	}
	return nil
}

// Attr is what attrs checks of one path.
type Attr struct {
	MtimeSec  int64  `json:"s"`
	MtimeNsec int64  `json:"ns"`
	Rdev      uint64 `json:"rdev,omitempty"` // devices only
}

func attrs(root, js string) error {
	var want map[string]Attr
	if err := json.Unmarshal([]byte(js), &want); err != nil {
		return fmt.Errorf("attrs: %w", err)
	}
	var e check.Errs
	for p, w := range want {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			e.Addf("%s: %v", p, err)
			continue
		}
		if st.Mtim.Sec != w.MtimeSec || st.Mtim.Nsec != w.MtimeNsec {
			e.Addf("%s: mtime %d.%09d, want %d.%09d", p, st.Mtim.Sec, st.Mtim.Nsec, w.MtimeSec, w.MtimeNsec)
		}
		if w.Rdev != 0 && st.Rdev != w.Rdev {
			e.Addf("%s: rdev %d:%d, want %d:%d", p, unix.Major(st.Rdev), unix.Minor(st.Rdev), unix.Major(w.Rdev), unix.Minor(w.Rdev))
		}
	}
	if !e.Empty() {
		for _, s := range e.Strings() {
			fmt.Println("rafsprobe:", s)
		}
		return errors.New("attrs differ")
	}
	fmt.Printf("rafsprobe: mtimes and device numbers of %d entries match\n", len(want))
	return nil
}
