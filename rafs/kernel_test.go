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
	"strings"
	"syscall"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// kernelMount mounts an EROFS image with the Linux EROFS driver through
// read-only loop devices (extra devices for device=). It skips when the
// kernel or the privileges are missing.
func kernelMount(t *testing.T, image string, devices ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	if fss, _ := os.ReadFile("/proc/filesystems"); !bytes.Contains(fss, []byte("erofs")) {
		t.Skip("no EROFS in this kernel")
	}
	loop := func(p string) string {
		out, err := exec.Command("losetup", "-f", "--show", "--read-only", p).Output()
		if err != nil {
			t.Skipf("losetup: %v", err)
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
			img, err := Open(tc.boot, tc.opts)
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
				if n.IsRegular() && tc.withData {
					s := md5.Sum(readAll(t, img, n))
					sum = hex.EncodeToString(s[:])
				}
				ours = append(ours, describe(p, n.Mode, n.Size, n.Nlink, int64(n.Mtime), int64(n.MtimeNsec), target, sum))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			mnt := kernelMount(t, tc.boot, tc.devices...)
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
				if st.Mode&syscall.S_IFMT == syscall.S_IFREG && tc.withData {
					b, err := os.ReadFile(p)
					if err != nil {
						return err
					}
					s := md5.Sum(b)
					sum = hex.EncodeToString(s[:])
				}
				theirs = append(theirs, describe(rel, st.Mode, uint64(st.Size), uint32(st.Nlink), st.Mtim.Sec, st.Mtim.Nsec, target, sum))
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
		})
	}
}

func blobFileBackend(p string) *backend.LocalFS { return &backend.LocalFS{BlobFile: p} }
