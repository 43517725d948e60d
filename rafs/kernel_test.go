package rafs

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// kernelMount mounts an EROFS image with the Linux EROFS driver through
// read-only loop devices (extra devices for device=). It skips when the
// kernel or the privileges are missing.
func kernelMount(t *testing.T, image string, devices ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root for loop devices")
	}
	if fss, _ := os.ReadFile("/proc/filesystems"); !bytes.Contains(fss, []byte("erofs")) {
		testenv.Skip(t, "no EROFS in this kernel")
	}
	loop := func(p string) string {
		out, err := exec.Command("losetup", "-f", "--show", "--read-only", p).Output()
		if err != nil {
			testenv.Skipf(t, "losetup: %v", err)
		}
		dev := strings.TrimSpace(string(out))
		t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
		return dev
	}
	opts := "ro"
	for _, d := range devices {
		opts += ",device=" + loop(d)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "erofs", "-o", opts, loop(image), mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return mnt
}

// describe renders one entry the same way for both sides.
func describe(p string, mode uint32, size uint64, nlink uint32, mtime int64, nsec int64, target string, sum string) string {
	return fmt.Sprintf("%s %o %d %d %d.%09d %q %s", p, mode, size, nlink, mtime, nsec, target, sum)
}

// TestKernelEROFSAgrees walks images with our reader and with the kernel's
// EROFS driver and compares every path's type, mode, size, link count,
// mtime, symlink target and (when the kernel can read the data) content.
func TestKernelEROFSAgrees(t *testing.T) {
	snap, err := snapshotterBoot(t, "v6-bootstrap-chunk-pos-438272.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	snapPath := filepath.Join(t.TempDir(), "image.boot")
	os.WriteFile(snapPath, snap, 0o644)
	for _, tc := range []struct {
		name     string
		boot     string
		devices  []string
		opts     Options
		withData bool
	}{
		{name: "snapshotter-v6", boot: snapPath},
		{name: "nydus-2.2", boot: v6Boot},
		{name: "erofs-utils", boot: fx("erofs-utils/meta.img"), devices: []string{fx("erofs-utils/blob.img")},
			opts: Options{AllowPlainEROFS: true}, withData: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.withData {
				tc.opts.Backend = blobFileBackend(tc.devices[0])
			}
			compareWithKernel(t, tc.boot, tc.devices, tc.opts, tc.withData)
		})
	}
}

func blobFileBackend(p string) *backend.LocalFS { return &backend.LocalFS{BlobFile: p} }

// compareWithKernel walks boot with our reader and with the kernel's EROFS
// driver and compares every entry (and contents when withData).
func compareWithKernel(t *testing.T, boot string, devices []string, opts Options, withData bool) {
	t.Helper()
	img, err := Open(boot, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	var ours []string
	err = img.Walk(func(p string, n *Inode) error {
		target, sum := "", ""
		if n.IsSymlink() {
			b, _ := img.Readlink(n.Ino)
			target = string(b)
		}
		if n.IsRegular() && withData {
			s := md5.Sum(readAll(t, img, n))
			sum = hex.EncodeToString(s[:])
		}
		xs, err := img.Xattrs(n.Ino)
		if err != nil {
			return err
		}
		var xl []string
		for _, x := range xs {
			xl = append(xl, x.Name+"="+string(x.Value))
		}
		sort.Strings(xl)
		ours = append(ours, describe(p, n.Mode, n.Size, n.Nlink, int64(n.Mtime), int64(n.MtimeNsec), target, sum)+" "+strings.Join(xl, ","))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mnt := kernelMount(t, boot, devices...)
	var theirs []string
	err = filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, mnt), "/")
		target, sum := "", ""
		if st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			target, _ = os.Readlink(p)
		}
		if st.Mode&syscall.S_IFMT == syscall.S_IFREG && withData {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := md5.Sum(b)
			sum = hex.EncodeToString(s[:])
		}
		theirs = append(theirs, describe(rel, st.Mode, uint64(st.Size), uint32(st.Nlink), st.Mtim.Sec, st.Mtim.Nsec, target, sum)+" "+kernelXattrs(t, p))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ours) != len(theirs) {
		t.Fatalf("%d entries, the kernel sees %d", len(ours), len(theirs))
	}
	bad := 0
	for i := range ours {
		if ours[i] != theirs[i] {
			if bad++; bad <= 5 {
				t.Errorf("ours   %s\nkernel %s", ours[i], theirs[i])
			}
		}
	}
}

// kernelXattrs lists a path's xattrs through the kernel, sorted.
func kernelXattrs(t *testing.T, p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return "listxattr:" + err.Error()
	}
	var xl []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return "getxattr:" + err.Error()
		}
		xl = append(xl, name+"="+string(v[:m]))
	}
	sort.Strings(xl)
	return strings.Join(xl, ",")
}

// TestKernelEROFSMkfs builds a plain EROFS image with mkfs.erofs (data
// inline in the image, shared xattrs, big directories) and checks that we
// read it exactly as the kernel does.
func TestKernelEROFSMkfs(t *testing.T) {
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		testenv.Skip(t, "no mkfs.erofs")
	}
	src := t.TempDir()
	big := bytes.Repeat([]byte("erofs flat data "), 5000)
	files := map[string][]byte{"a": []byte("x"), "big": big, "d/e/f": []byte("deep\n"), "empty": nil}
	for i := 0; i < 300; i++ {
		files[fmt.Sprintf("many/%03d-with-a-longer-name", i)] = []byte(fmt.Sprint(i))
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("d/e/f", filepath.Join(src, "link"))
	os.Link(filepath.Join(src, "a"), filepath.Join(src, "a-hard"))
	for _, n := range []string{"a", "big", "d", "empty"} {
		unix.Lsetxattr(filepath.Join(src, n), "user.shared", []byte("yes"), 0)
	}
	unix.Lsetxattr(filepath.Join(src, "big"), "user.own", []byte("mine"), 0)
	unix.Lsetxattr(filepath.Join(src, "d"), "trusted.overlay.opaque", []byte("y"), 0)
	img := filepath.Join(t.TempDir(), "plain.img")
	if out, err := exec.Command("mkfs.erofs", "-x1", "-T1700000000", img, src).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v %s", err, out)
	}
	compareWithKernel(t, img, nil, Options{AllowPlainEROFS: true}, true)
	// The image really exercises shared xattrs and inline file data.
	im, err := Open(img, Options{AllowPlainEROFS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	m := im.f.(*v6)
	shared, flat := 0, 0
	im.Walk(func(p string, n *Inode) error {
		raw, _ := m.inode(n.id)
		if raw.v6.xsize > 0 && m.d[raw.v6.off+raw.v6.isize+4] > 0 {
			shared++
		}
		if n.IsRegular() && raw.v6.layout != layoutChunkBased && n.Size > 0 {
			flat++
		}
		return nil
	})
	if shared == 0 || flat == 0 {
		t.Errorf("%d inodes with shared xattrs, %d flat files", shared, flat)
	}
}
