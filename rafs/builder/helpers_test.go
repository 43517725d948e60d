package builder

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"golang.org/x/sys/unix"
)

// makeSource fills dir with every kind of entry the builder handles.
func makeSource(t testing.TB, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "skipping: the test tree needs root (device nodes, trusted.* xattrs, chown)")
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, data []byte) {
		t.Helper()
		must(os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755))
		must(os.WriteFile(filepath.Join(dir, p), data, 0o644))
	}
	pattern := func(n, seed int) []byte {
		b := make([]byte, n)
		x := uint32(seed*2654435761 + 1)
		for i := range b {
			x = x*1664525 + 1013904223
			b[i] = byte(x >> 24)
		}
		return b
	}
	write("hello.txt", []byte("hello nydus\n"))
	write("empty", nil)
	write("big.bin", pattern(3<<20+12345, 1))          // several 1 MiB chunks
	write("dup/big-copy.bin", pattern(3<<20+12345, 1)) // dedup of whole file
	write("dup/zeros", make([]byte, 2<<20))            // repeated chunk inside a file
	write("odd/4k", pattern(4096, 2))
	write("odd/4k+1", pattern(4097, 3))
	must(os.Link(filepath.Join(dir, "hello.txt"), filepath.Join(dir, "odd/hardlink")))
	must(os.Link(filepath.Join(dir, "hello.txt"), filepath.Join(dir, "dup/hardlink2")))
	must(os.Symlink("hello.txt", filepath.Join(dir, "link")))
	must(os.Symlink("../"+strings.Repeat("x", 3000), filepath.Join(dir, "odd/longlink")))
	must(os.Symlink("/abs/target", filepath.Join(dir, "abslink")))
	must(unix.Mknod(filepath.Join(dir, "chr"), unix.S_IFCHR|0o640, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(dir, "blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(259, 70000))))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	if l, err := net.Listen("unix", filepath.Join(dir, "sock")); err == nil {
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
	}
	must(os.MkdirAll(filepath.Join(dir, "emptydir"), 0o700))
	// a directory spanning several dirent blocks
	for i := 0; i < 400; i++ {
		write(fmt.Sprintf("many/entry-with-a-longish-name-%04d", i), []byte(fmt.Sprint(i)))
	}
	// xattrs
	must(unix.Setxattr(filepath.Join(dir, "hello.txt"), "user.foo", []byte("bar"), 0))
	must(unix.Setxattr(filepath.Join(dir, "hello.txt"), "trusted.overlay.x", []byte("y"), 0))
	must(unix.Setxattr(filepath.Join(dir, "big.bin"), "security.capability",
		[]byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
	must(unix.Setxattr(filepath.Join(dir, "emptydir"), "user.big", bytes.Repeat([]byte("v"), 3000), 0))
	must(unix.Setxattr(filepath.Join(dir, "many"), "user.big", bytes.Repeat([]byte("w"), 3900), 0))
	must(unix.Lsetxattr(filepath.Join(dir, "link"), "trusted.l", []byte("1"), 0))
	must(unix.Lsetxattr(filepath.Join(dir, "odd/longlink"), "trusted.big", bytes.Repeat([]byte("z"), 2000), 0))
	// ownership and times with nanoseconds
	must(os.Lchown(filepath.Join(dir, "dup"), 1000, 2000))
	must(os.Lchown(filepath.Join(dir, "link"), 70000, 80000))
	must(os.Chmod(filepath.Join(dir, "odd/4k"), 0o4751))
	walkPaths(t, dir, func(p string) {
		ts := []unix.Timespec{{Sec: 1600000000, Nsec: 123456789}, {Sec: 1600000000 + int64(len(p)), Nsec: int64(len(p)) * 1000003 % 1e9}}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
	})
}

// walkPaths calls fn for every path under dir, deepest first.
func walkPaths(t testing.TB, dir string, fn func(string)) {
	var paths []string
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for i := len(paths) - 1; i >= 0; i-- {
		fn(paths[i])
	}
}

// entryInfo is everything compared about one path.
type entryInfo struct {
	Mode       uint32
	UID, GID   uint32
	Size       int64
	Mtime      unix.Timespec
	Rdev       uint64
	Target     string
	Xattrs     string
	Sum        [32]byte
	Nlink      uint64
	LinkPeers  string // sorted paths sharing the inode
	skipMtime  bool
	skipXattrs bool
}

// scanTree describes every entry under dir; sockets are left out.
func scanTree(t testing.TB, dir string) map[string]entryInfo {
	t.Helper()
	out := map[string]entryInfo{}
	inodes := map[uint64][]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			return nil
		}
		e := entryInfo{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim, Nlink: st.Nlink}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.Size = st.Size
			e.Sum = sha256.Sum256(data)
			inodes[st.Ino] = append(inodes[st.Ino], rel)
		case unix.S_IFLNK:
			e.Target, _ = os.Readlink(p)
			e.Size = st.Size
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Rdev = st.Rdev
		case unix.S_IFDIR:
			e.Nlink = 0 // host filesystems differ on directory link counts
		}
		xs, err := readXattrs(p)
		if err != nil {
			return err
		}
		e.Xattrs = xattrString(xs)
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	setLinkPeers(out, inodes)
	return out
}

// xattrString renders xattrs in a comparable form.
func xattrString(xs []xattr) string {
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	var sb strings.Builder
	for _, x := range xs {
		fmt.Fprintf(&sb, "%s=%q;", x.Name, x.Value)
	}
	return sb.String()
}

// setLinkPeers records, for every path, the paths sharing its inode.
func setLinkPeers(out map[string]entryInfo, groups map[uint64][]string) {
	for _, ps := range groups {
		sort.Strings(ps)
		for _, p := range ps {
			e := out[p]
			e.LinkPeers = strings.Join(ps, ",")
			out[p] = e
		}
	}
}

// compareTrees fails the test on any difference between two scans.
func compareTrees(t testing.TB, want, got map[string]entryInfo) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s: missing from the image", p)
			continue
		}
		if w.skipMtime || g.skipMtime {
			w.Mtime, g.Mtime = unix.Timespec{}, unix.Timespec{}
		}
		if w != g {
			t.Errorf("%s differs:\n source %+v\n image  %+v", p, w, g)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: in the image but not in the source", p)
		}
	}
}

// requireKernelErofs skips unless loop devices and EROFS are usable.
func requireKernelErofs(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "skipping: kernel EROFS mounts need root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		testenv.Skip(t, "skipping: no loop devices (/dev/loop-control missing)")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		testenv.Skip(t, "skipping: losetup not installed")
	}
	fsys, _ := os.ReadFile("/proc/filesystems")
	if !bytes.Contains(fsys, []byte("erofs")) {
		exec.Command("modprobe", "erofs").Run()
		fsys, _ = os.ReadFile("/proc/filesystems")
		if !bytes.Contains(fsys, []byte("erofs")) {
			testenv.Skip(t, "skipping: the kernel has no EROFS (not in /proc/filesystems)")
		}
	}
}

// loopAttach attaches a read-only loop device and detaches it at cleanup.
func loopAttach(t testing.TB, file string) string {
	t.Helper()
	cmd := exec.Command("losetup", "--find", "--show", "--read-only", file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		testenv.Skipf(t, "skipping: losetup %s: %v: %s", file, err, stderr.Bytes())
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// mountErofs mounts boot (with blob devices) through the kernel and returns
// the mount point; it is unmounted at cleanup.
func mountErofs(t testing.TB, boot string, blobs ...string) string {
	t.Helper()
	mnt := t.TempDir()
	bootDev := loopAttach(t, boot)
	var devs []string
	for _, b := range blobs {
		devs = append(devs, "device="+loopAttach(t, b))
	}
	opts := strings.Join(devs, ",")
	if err := unix.Mount(bootDev, mnt, "erofs", unix.MS_RDONLY, opts); err != nil {
		if errors.Is(err, unix.ENODEV) {
			testenv.Skip(t, "skipping: EROFS not available")
		}
		t.Fatalf("mount -t erofs -o %s %s: %v", opts, bootDev, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("umount %s: %v", mnt, err)
		}
	})
	return mnt
}

type unixStat = syscall.Stat_t
