package passthrough

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOpsThroughMount runs every operation through the host FUSE client
// and compares with what the host sees in the shared directory.
func TestOpsThroughMount(t *testing.T) {
	e := mountEnv(t, Options{Cache: CacheAuto, Xattr: true})
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"create-write-read", func(t *testing.T) {
			data := make([]byte, 3<<20+17)
			rand.Read(data)
			if err := os.WriteFile(e.via("big"), data, 0o640); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(e.host("big")); !bytes.Equal(got, data) {
				t.Fatal("host content differs")
			}
			got, err := os.ReadFile(e.via("big"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back differs: %v", err)
			}
			if st := mustStat(t, e.host("big")); st.Mode&07777 != 0o640 || st.Uid != 0 {
				t.Fatalf("mode %o uid %d", st.Mode&07777, st.Uid)
			}
		}},
		{"append-lands-at-host-eof", func(t *testing.T) {
			f, err := os.OpenFile(e.via("app"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Write([]byte("A"))
			// The host appends behind the guest's back; the guest's next
			// O_APPEND write must still land at the host's end of file.
			hf, _ := os.OpenFile(e.host("app"), os.O_WRONLY|os.O_APPEND, 0)
			hf.Write([]byte("HOST"))
			hf.Close()
			if _, err := f.Write([]byte("B")); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(e.host("app")); string(got) != "AHOSTB" {
				t.Fatalf("host sees %q", got)
			}
		}},
		{"truncate-path-and-fh", func(t *testing.T) {
			os.WriteFile(e.via("tr"), []byte("0123456789"), 0o644)
			if err := os.Truncate(e.via("tr"), 4); err != nil {
				t.Fatal(err)
			}
			if st := mustStat(t, e.host("tr")); st.Size != 4 {
				t.Fatalf("size %d", st.Size)
			}
			f, err := os.OpenFile(e.via("tr"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(8192); err != nil {
				t.Fatal(err)
			}
			if st := mustStat(t, e.host("tr")); st.Size != 8192 {
				t.Fatalf("size %d", st.Size)
			}
		}},
		{"chmod-chown", func(t *testing.T) {
			os.WriteFile(e.via("own"), nil, 0o644)
			if err := os.Chmod(e.via("own"), 0o4751); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(e.via("own"), 1234, 5678); err != nil {
				t.Fatal(err)
			}
			st := mustStat(t, e.host("own"))
			// chown by root keeps no suid (the kernel clears it on chown).
			if st.Uid != 1234 || st.Gid != 5678 || st.Mode&0777 != 0o751 {
				t.Fatalf("uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode&07777)
			}
		}},
		{"utimes-now-omit", func(t *testing.T) {
			os.WriteFile(e.via("ut"), nil, 0o644)
			at, mt := time.Unix(1000000, 5000), time.Unix(2000000, 7000)
			if err := os.Chtimes(e.via("ut"), at, mt); err != nil {
				t.Fatal(err)
			}
			st := mustStat(t, e.host("ut"))
			if st.Atim.Sec != 1000000 || st.Atim.Nsec != 5000 || st.Mtim.Sec != 2000000 || st.Mtim.Nsec != 7000 {
				t.Fatalf("times %v %v", st.Atim, st.Mtim)
			}
			// atime OMIT, mtime NOW.
			before := time.Now().Add(-time.Second).Unix()
			ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_NOW}}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, e.via("ut"), ts, 0); err != nil {
				t.Fatal(err)
			}
			st = mustStat(t, e.host("ut"))
			if st.Atim.Sec != 1000000 || st.Mtim.Sec < before {
				t.Fatalf("after OMIT/NOW: atime %v mtime %v", st.Atim, st.Mtim)
			}
			// symlink's own times (lutimes).
			os.Symlink("nowhere", e.via("utl"))
			ts = []unix.Timespec{{Sec: 300}, {Sec: 400}}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, e.via("utl"), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatal(err)
			}
			if st := mustStat(t, e.host("utl")); st.Mtim.Sec != 400 {
				t.Fatalf("symlink mtime %v", st.Mtim)
			}
		}},
		{"mkdir-rmdir-unlink-rename", func(t *testing.T) {
			if err := os.Mkdir(e.via("d"), 0o750); err != nil {
				t.Fatal(err)
			}
			if st := mustStat(t, e.host("d")); st.Mode&syscall.S_IFMT != syscall.S_IFDIR || st.Mode&0777 != 0o750 {
				t.Fatalf("mode %o", st.Mode)
			}
			os.WriteFile(e.via("d", "f"), []byte("x"), 0o644)
			if err := os.Rename(e.via("d", "f"), e.via("d", "g")); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(e.host("d", "g")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(e.via("d"), e.via("d2")); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Rmdir(e.via("d2")); !errors.Is(err, syscall.ENOTEMPTY) {
				t.Fatalf("rmdir non-empty: %v", err)
			}
			if err := os.Remove(e.via("d2", "g")); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(e.via("d2")); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(e.host("d2")); !os.IsNotExist(err) {
				t.Fatalf("d2 still there: %v", err)
			}
		}},
		{"link-symlink-readlink", func(t *testing.T) {
			os.WriteFile(e.via("lt"), []byte("x"), 0o644)
			if err := os.Link(e.via("lt"), e.via("lt2")); err != nil {
				t.Fatal(err)
			}
			if st := mustStat(t, e.host("lt")); st.Nlink != 2 {
				t.Fatalf("nlink %d", st.Nlink)
			}
			if st := mustStat(t, e.via("lt2")); st.Nlink != 2 || st.Ino != mustStat(t, e.host("lt")).Ino {
				t.Fatalf("via nlink %d ino %d", st.Nlink, st.Ino)
			}
			if err := os.Symlink("../some/where", e.via("sl")); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.Readlink(e.host("sl")); got != "../some/where" {
				t.Fatalf("host target %q", got)
			}
			if got, err := os.Readlink(e.via("sl")); err != nil || got != "../some/where" {
				t.Fatalf("via target %q %v", got, err)
			}
		}},
		{"mknod", func(t *testing.T) {
			if err := unix.Mkfifo(e.via("fifo"), 0o620); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mknod(e.via("null"), syscall.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
				t.Fatal(err)
			}
			umask := uint32(unix.Umask(0))
			unix.Umask(int(umask))
			if st := mustStat(t, e.host("fifo")); st.Mode != syscall.S_IFIFO|0o620&^umask {
				t.Fatalf("fifo mode %o", st.Mode)
			}
			if st := mustStat(t, e.host("null")); st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
				t.Fatalf("chr mode %o rdev %x", st.Mode, st.Rdev)
			}
		}},
		{"readdir", func(t *testing.T) {
			os.Mkdir(e.host("many"), 0o755)
			var want []string
			for i := 0; i < 700; i++ {
				n := "entry-with-a-long-name-" + strconv.Itoa(i)
				want = append(want, n)
				os.WriteFile(e.host("many", n), nil, 0o644)
			}
			ents, err := os.ReadDir(e.via("many"))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, de := range ents {
				got = append(got, de.Name())
				if !de.Type().IsRegular() {
					t.Fatalf("%s: type %v", de.Name(), de.Type())
				}
			}
			sort.Strings(want)
			if len(got) != len(want) {
				t.Fatalf("got %d entries, want %d", len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("entry %d: %q want %q", i, got[i], want[i])
				}
			}
		}},
		{"statfs", func(t *testing.T) {
			var a, b unix.Statfs_t
			if err := unix.Statfs(e.mnt, &a); err != nil {
				t.Fatal(err)
			}
			unix.Statfs(e.share, &b)
			if a.Blocks != b.Blocks || a.Bsize != b.Bsize || a.Files != b.Files {
				t.Fatalf("statfs via %+v host %+v", a, b)
			}
		}},
		{"fsync-flush", func(t *testing.T) {
			f, err := os.Create(e.via("sync"))
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("data"))
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			d, _ := os.Open(e.mnt)
			defer d.Close()
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
		}},
		{"fallocate-punch", func(t *testing.T) {
			f, err := os.Create(e.via("fa"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := unix.Fallocate(int(f.Fd()), 0, 0, 1<<20); err != nil {
				t.Fatal(err)
			}
			st := mustStat(t, e.host("fa"))
			if st.Size != 1<<20 || st.Blocks < (1<<20)/512 {
				t.Fatalf("size %d blocks %d", st.Size, st.Blocks)
			}
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 1<<19); err != nil {
				t.Fatal(err)
			}
			st2 := mustStat(t, e.host("fa"))
			if st2.Size != 1<<20 || st2.Blocks >= st.Blocks {
				t.Fatalf("after punch size %d blocks %d (was %d)", st2.Size, st2.Blocks, st.Blocks)
			}
		}},
		{"lseek-data-hole", func(t *testing.T) {
			hf, _ := os.Create(e.host("sparse"))
			hf.WriteAt(bytes.Repeat([]byte("a"), 4096), 0)
			hf.WriteAt(bytes.Repeat([]byte("b"), 4096), 1<<20)
			hf.Close()
			hfd, _ := unix.Open(e.host("sparse"), unix.O_RDONLY, 0)
			defer unix.Close(hfd)
			f, err := os.Open(e.via("sparse"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, q := range []struct {
				off    int64
				whence int
			}{{0, unix.SEEK_HOLE}, {4096, unix.SEEK_DATA}, {0, unix.SEEK_DATA}, {1 << 20, unix.SEEK_HOLE}, {1<<20 + 100, unix.SEEK_DATA}} {
				want, _ := unix.Seek(hfd, q.off, q.whence)
				got, err := unix.Seek(int(f.Fd()), q.off, q.whence)
				if err != nil || got != want {
					t.Fatalf("lseek(%d, %d) = %d, %v; host %d", q.off, q.whence, got, err, want)
				}
			}
			if _, err := unix.Seek(int(f.Fd()), 2<<20, unix.SEEK_DATA); !errors.Is(err, unix.ENXIO) {
				t.Fatalf("SEEK_DATA past end: %v", err)
			}
		}},
		{"rename2", func(t *testing.T) {
			os.WriteFile(e.via("ra"), []byte("A"), 0o644)
			os.WriteFile(e.via("rb"), []byte("B"), 0o644)
			if err := unix.Renameat2(unix.AT_FDCWD, e.via("ra"), unix.AT_FDCWD, e.via("rb"), unix.RENAME_NOREPLACE); !errors.Is(err, unix.EEXIST) {
				t.Fatalf("NOREPLACE over existing: %v", err)
			}
			if err := unix.Renameat2(unix.AT_FDCWD, e.via("ra"), unix.AT_FDCWD, e.via("rc"), unix.RENAME_NOREPLACE); err != nil {
				t.Fatal(err)
			}
			if err := unix.Renameat2(unix.AT_FDCWD, e.via("rc"), unix.AT_FDCWD, e.via("rb"), unix.RENAME_EXCHANGE); err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(e.host("rb"))
			b, _ := os.ReadFile(e.host("rc"))
			if string(a) != "A" || string(b) != "B" {
				t.Fatalf("after exchange rb=%q rc=%q", a, b)
			}
			if got, _ := os.ReadFile(e.via("rb")); string(got) != "A" {
				t.Fatalf("via rb=%q", got)
			}
		}},
		{"xattr", func(t *testing.T) {
			os.WriteFile(e.via("xa"), nil, 0o644)
			if err := unix.Setxattr(e.via("xa"), "user.k", []byte("v1"), 0); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			if n, err := unix.Getxattr(e.host("xa"), "user.k", buf); err != nil || string(buf[:n]) != "v1" {
				t.Fatalf("host sees %q %v", buf[:n], err)
			}
			if n, err := unix.Getxattr(e.via("xa"), "user.k", buf); err != nil || string(buf[:n]) != "v1" {
				t.Fatalf("via %q %v", buf[:n], err)
			}
			if n, err := unix.Getxattr(e.via("xa"), "user.k", nil); err != nil || n != 2 {
				t.Fatalf("size query %d %v", n, err)
			}
			if _, err := unix.Getxattr(e.via("xa"), "user.k", buf[:1]); !errors.Is(err, unix.ERANGE) {
				t.Fatalf("small buffer: %v", err)
			}
			if n, err := unix.Listxattr(e.via("xa"), buf); err != nil || !bytes.Contains(buf[:n], []byte("user.k\x00")) {
				t.Fatalf("list %q %v", buf[:n], err)
			}
			if err := unix.Setxattr(e.via("xa"), "user.k", []byte("v2"), unix.XATTR_CREATE); !errors.Is(err, unix.EEXIST) {
				t.Fatalf("XATTR_CREATE on existing: %v", err)
			}
			if err := unix.Removexattr(e.via("xa"), "user.k"); err != nil {
				t.Fatal(err)
			}
			if _, err := unix.Getxattr(e.host("xa"), "user.k", buf); !errors.Is(err, unix.ENODATA) {
				t.Fatalf("host after remove: %v", err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, c.run)
	}
	e.outsideUntouched(t)
}

func TestXattrOffIsENOSYS(t *testing.T) {
	e := mountEnv(t, Options{})
	os.WriteFile(e.host("f"), nil, 0o644)
	unix.Setxattr(e.host("f"), "user.k", []byte("v"), 0)
	buf := make([]byte, 16)
	// The kernel turns ENOSYS into EOPNOTSUPP and stops asking.
	if _, err := unix.Getxattr(e.via("f"), "user.k", buf); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("getxattr: %v", err)
	}
	if err := unix.Setxattr(e.via("f"), "user.j", []byte("v"), 0); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("setxattr: %v", err)
	}
	if _, err := unix.Getxattr(e.host("f"), "user.j", buf); !errors.Is(err, unix.ENODATA) {
		t.Fatalf("host got user.j: %v", err)
	}
	h := hdr(1)
	if _, s := e.fs.GetXAttr(nil, &h, "user.k", buf); s != 38 /* ENOSYS */ {
		t.Fatalf("raw GetXAttr: %v", s)
	}
	if _, s := e.fs.ListXAttr(nil, &h, buf); s != 38 {
		t.Fatalf("raw ListXAttr: %v", s)
	}
	if s := e.fs.RemoveXAttr(nil, &h, "user.k"); s != 38 {
		t.Fatalf("raw RemoveXAttr: %v", s)
	}
}

func TestReaddirWithoutPlus(t *testing.T) {
	e := mountEnv(t, Options{Cache: CacheNever})
	os.Mkdir(e.host("d"), 0o755)
	for i := 0; i < 300; i++ {
		os.Symlink("t", e.host("d", "l"+strconv.Itoa(i)))
	}
	ents, err := os.ReadDir(e.via("d"))
	if err != nil || len(ents) != 300 {
		t.Fatalf("%d entries, %v", len(ents), err)
	}
	for _, de := range ents {
		if de.Type()&os.ModeSymlink == 0 {
			t.Fatalf("%s: type %v", de.Name(), de.Type())
		}
	}
	// cache=never: file data is direct I/O, so a host change is seen at once.
	os.WriteFile(e.host("f"), []byte("one"), 0o644)
	f, _ := os.Open(e.via("f"))
	defer f.Close()
	b := make([]byte, 10)
	n, _ := f.ReadAt(b, 0)
	os.WriteFile(e.host("f"), []byte("two"), 0o644)
	n, _ = f.ReadAt(b, 0)
	if string(b[:n]) != "two" {
		t.Fatalf("read %q after host change", b[:n])
	}
	_ = filepath.Join
}

// TestUnlinkedOpenFile: an open file keeps working after unlink with a tiny
// fd cache. (On ext4 the handle of an unlinked open inode still opens, so
// this passes without the pin addFile takes; other filesystems answer
// ESTALE.)
func TestUnlinkedOpenFile(t *testing.T) {
	e := mountEnv(t, Options{FdCacheSize: 1, Cache: CacheNever})
	for i := 0; i < 20; i++ {
		os.WriteFile(e.host("o"+strconv.Itoa(i)), nil, 0o644)
	}
	f, err := os.Create(e.via("tmp"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(e.via("tmp")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ { // churn the LRU
		os.Stat(e.via("o" + strconv.Itoa(i)))
	}
	if _, err := f.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	if err := f.Chmod(0o600); err != nil {
		t.Fatalf("fchmod of unlinked open file: %v", err)
	}
	st, err := f.Stat()
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() != 10 {
		t.Fatalf("fstat: %v %v", st, err)
	}
	if _, cached := e.fs.Inodes(); cached > 2 {
		t.Fatalf("%d cached fds with a cache of 1 and one open file", cached)
	}
}
