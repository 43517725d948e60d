package check

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// SeededBytes returns n pseudo-random bytes from seed (the same on every run).
func SeededBytes(seed uint64, n int) []byte {
	var key [32]byte
	for i := range 4 {
		v := seed + uint64(i)*0x9e3779b97f4a7c15
		for j := range 8 {
			key[i*8+j] = byte(v >> (8 * j))
		}
	}
	b := make([]byte, n)
	r := rand.NewChaCha8(key)
	_, _ = r.Read(b)
	return b
}

// MutationBase creates the state Mutate starts from (on the host, in the
// shared directory and in a reference copy).
func MutationBase(root string) error {
	steps := []func() error{
		func() error { return os.WriteFile(filepath.Join(root, "append.txt"), []byte("first line\n"), 0o644) },
		func() error { return os.WriteFile(filepath.Join(root, "shrink.bin"), SeededBytes(11, 100000), 0o644) },
		func() error { return os.WriteFile(filepath.Join(root, "grow.bin"), []byte("tiny"), 0o644) },
		func() error { return os.WriteFile(filepath.Join(root, "rename-me.txt"), []byte("moving\n"), 0o644) },
		func() error { return os.WriteFile(filepath.Join(root, "replaced.txt"), []byte("old\n"), 0o644) },
		func() error { return os.WriteFile(filepath.Join(root, "replacer.txt"), []byte("new\n"), 0o644) },
		func() error { return os.WriteFile(filepath.Join(root, "delete-me.txt"), []byte("bye\n"), 0o644) },
		func() error { return os.WriteFile(filepath.Join(root, "overwrite.bin"), SeededBytes(12, 8192), 0o644) },
		func() error { return os.Mkdir(filepath.Join(root, "rmdir-me"), 0o755) },
		func() error { return os.Mkdir(filepath.Join(root, "olddir"), 0o755) },
		func() error { return os.WriteFile(filepath.Join(root, "olddir", "inside.txt"), []byte("in\n"), 0o644) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("mutation base: %w", err)
		}
	}
	return nil
}

// Mutate applies the guest's changes: create, write, append, truncate
// (shrink and grow), rename (plain, over a file, a directory), unlink,
// mkdir, rmdir, chmod, chown, symlink and link. Modes avoid group/other
// write bits so that a 022 umask on either side does not matter.
func Mutate(root string) error {
	j := func(p string) string { return filepath.Join(root, filepath.FromSlash(p)) }
	steps := []struct {
		what string
		do   func() error
	}{
		{"mkdir a/b/c", func() error { return os.MkdirAll(j("a/b/c"), 0o755) }},
		{"mkdir private", func() error { return os.Mkdir(j("private"), 0o700) }},
		{"create a/new.txt", func() error { return createExcl(j("a/new.txt"), []byte("hello from the guest\n"), 0o640) }},
		{"create empty", func() error { return createExcl(j("a/b/empty"), nil, 0o600) }},
		{"write 3 MiB in 64 KiB writes", func() error { return writeChunks(j("a/b/c/written.bin"), SeededBytes(13, 3<<20), 64<<10) }},
		{"pwrite into a file", func() error { return pwrite(j("overwrite.bin"), []byte("PATCHED"), 4000) }},
		{"append", func() error { return appendFile(j("append.txt"), []byte("second line\n")) }},
		{"append again", func() error { return appendFile(j("append.txt"), []byte("third line\n")) }},
		{"truncate shrink", func() error { return os.Truncate(j("shrink.bin"), 12345) }},
		{"truncate grow (sparse)", func() error { return os.Truncate(j("grow.bin"), 5<<20) }},
		{"truncate to zero", func() error { return os.Truncate(j("a/new.txt"), 0) }},
		{"write after truncate", func() error { return pwrite(j("a/new.txt"), []byte("rewritten\n"), 0) }},
		{"rename", func() error { return os.Rename(j("rename-me.txt"), j("a/b/renamed.txt")) }},
		{"rename over a file", func() error { return os.Rename(j("replacer.txt"), j("replaced.txt")) }},
		{"rename a directory", func() error { return os.Rename(j("olddir"), j("a/newdir")) }},
		{"unlink", func() error { return os.Remove(j("delete-me.txt")) }},
		{"rmdir", func() error { return unix.Rmdir(j("rmdir-me")) }},
		{"mkdir+rmdir", func() error {
			if err := os.Mkdir(j("transient"), 0o755); err != nil {
				return err
			}
			return unix.Rmdir(j("transient"))
		}},
		{"chmod", func() error { return os.Chmod(j("a/b/renamed.txt"), 0o600) }},
		{"chown", func() error { return os.Lchown(j("a/b/renamed.txt"), 4321, 8765) }},
		{"symlink", func() error { return os.Symlink("../append.txt", j("a/link-to-append")) }},
		{"hard link", func() error { return os.Link(j("a/b/c/written.bin"), j("a/hardlink.bin")) }},
		{"unlink one of two links", func() error {
			if err := os.Link(j("append.txt"), j("a/extra-link")); err != nil {
				return err
			}
			return os.Remove(j("a/extra-link"))
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("mutation %q: %w", s.what, err)
		}
	}
	return nil
}

// writeWith opens p with flag (and perm when creating), writes data at off
// (off < 0: at the current position, which O_APPEND puts at the end) in
// chunks of at most chunk bytes (0: one write), fsyncs when asked and closes.
func writeWith(p string, flag int, perm os.FileMode, data []byte, off int64, chunk int, fsync bool) error {
	f, err := os.OpenFile(p, flag, perm)
	if err != nil {
		return err
	}
	if chunk <= 0 {
		chunk = max(len(data), 1)
	}
	for i := 0; i < len(data) && err == nil; i += chunk {
		part := data[i:min(i+chunk, len(data))]
		if off >= 0 {
			_, err = f.WriteAt(part, off+int64(i))
		} else {
			_, err = f.Write(part)
		}
	}
	if err == nil && fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func createExcl(p string, data []byte, mode os.FileMode) error {
	return writeWith(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode, data, -1, 0, false)
}

func writeChunks(p string, data []byte, chunk int) error {
	return writeWith(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644, data, -1, chunk, true)
}

func pwrite(p string, data []byte, off int64) error {
	return writeWith(p, os.O_WRONLY, 0, data, off, 0, false)
}

func appendFile(p string, data []byte) error {
	return writeWith(p, os.O_WRONLY|os.O_APPEND, 0, data, -1, 0, false)
}

// Xattr names and values used by XattrBase and XattrOps.
const (
	XattrTarget    = "target"
	XattrHostName  = "user.nvfs.host"
	XattrHostValue = "set on the host"
	XattrGuestName = "user.nvfs.guest"
	XattrGuestVal  = "set in the guest \u2713"
	XattrGoneName  = "user.nvfs.removed"
)

// XattrBase creates dir/target with the host's xattr.
func XattrBase(dir string) error {
	p := filepath.Join(dir, XattrTarget)
	if err := os.WriteFile(p, []byte("xattr target\n"), 0o644); err != nil {
		return fmt.Errorf("xattr base: %w", err)
	}
	if err := unix.Setxattr(p, XattrHostName, []byte(XattrHostValue), 0); err != nil {
		return fmt.Errorf("xattr base: setxattr: %w", err)
	}
	return nil
}

// XattrOps runs in the guest: it reads the host's xattr, sets one, sets and
// removes another, lists them and checks a missing one gives ENODATA.
func XattrOps(dir string) []string {
	var e Errs
	p := filepath.Join(dir, XattrTarget)
	if v, err := getXattr(p, XattrHostName); err != nil {
		e.Addf("get host xattr: %v", err)
	} else if v != XattrHostValue {
		e.Addf("host xattr = %q, want %q", v, XattrHostValue)
	}
	if err := unix.Setxattr(p, XattrGuestName, []byte(XattrGuestVal), 0); err != nil {
		e.Addf("setxattr: %v", err)
	}
	if err := unix.Setxattr(p, XattrGoneName, []byte("x"), unix.XATTR_CREATE); err != nil {
		e.Addf("setxattr (create): %v", err)
	}
	if err := unix.Setxattr(p, XattrGoneName, []byte("y"), unix.XATTR_CREATE); !errors.Is(err, unix.EEXIST) {
		e.Addf("setxattr XATTR_CREATE on an existing name: %v, want EEXIST", err)
	}
	if err := unix.Removexattr(p, XattrGoneName); err != nil {
		e.Addf("removexattr: %v", err)
	}
	if _, err := getXattr(p, XattrGoneName); !errors.Is(err, unix.ENODATA) {
		e.Addf("getxattr of a removed name: %v, want ENODATA", err)
	}
	if v, err := getXattr(p, XattrGuestName); err != nil || v != XattrGuestVal {
		e.Addf("get guest xattr = %q, %v", v, err)
	}
	names, err := listXattrs(p)
	if err != nil {
		e.Addf("listxattr: %v", err)
	}
	want := []string{XattrGuestName, XattrHostName}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		e.Addf("listxattr = %q, want %q", names, want)
	}
	return e.Strings()
}

// CheckXattrsOnHost checks what XattrOps left behind, from the host.
func CheckXattrsOnHost(dir string) []string {
	var e Errs
	p := filepath.Join(dir, XattrTarget)
	if v, err := getXattr(p, XattrGuestName); err != nil || v != XattrGuestVal {
		e.Addf("host sees %s = %q, %v; want %q", XattrGuestName, v, err, XattrGuestVal)
	}
	if _, err := getXattr(p, XattrGoneName); !errors.Is(err, unix.ENODATA) {
		e.Addf("host sees removed %s: %v", XattrGoneName, err)
	}
	return e.Strings()
}

func listXattrs(p string) ([]string, error) {
	b := make([]byte, 4096)
	n, err := unix.Llistxattr(p, b)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range bytes.Split(b[:n], []byte{0}) {
		if strings.HasPrefix(string(s), "user.") {
			names = append(names, string(s))
		}
	}
	sort.Strings(names)
	return names, nil
}

// ReadOnlyOps checks that every kind of write fails with EROFS: creating
// in dir (file, directory, symlink, FIFO), chmod and rmdir of dir (rmdir
// only when dir is not a mount point) and, when file is set (an existing
// regular file), opening it for writing or truncating, truncate, chmod,
// chown, utimes, setxattr, removexattr, unlink, rename (in place and into
// dir) and link. On a mount that is not "ro" the answers come from the
// backend. Nothing may have changed afterwards.
func ReadOnlyOps(dir, file string) []string {
	var e Errs
	var dirBefore, fileBefore unix.Stat_t
	if err := unix.Lstat(dir, &dirBefore); err != nil || dirBefore.Mode&unix.S_IFMT != unix.S_IFDIR {
		return []string{fmt.Sprintf("readonly: %s must be an existing directory (%v)", dir, err)}
	}
	ops := dirWriteOps(dir)
	if file != "" {
		if err := unix.Lstat(file, &fileBefore); err != nil || fileBefore.Mode&unix.S_IFMT != unix.S_IFREG {
			return []string{fmt.Sprintf("readonly: %s must be an existing regular file (%v)", file, err)}
		}
		ops = append(fileWriteOps(file, dir), ops...)
	}
	for _, op := range ops {
		if err := op.do(); !errors.Is(err, unix.EROFS) {
			e.Addf("%s on a read-only share: %v, want EROFS", op.what, err)
		}
	}
	unchanged := func(p string, before *unix.Stat_t) {
		var after unix.Stat_t
		switch err := unix.Lstat(p, &after); {
		case err != nil:
			e.Addf("%s after the refused writes: %v", p, err)
		case after.Mode != before.Mode || after.Size != before.Size || after.Nlink != before.Nlink ||
			after.Uid != before.Uid || after.Gid != before.Gid || after.Mtim != before.Mtim:
			e.Addf("%s changed under the refused writes", p)
		}
	}
	unchanged(dir, &dirBefore)
	if file != "" {
		unchanged(file, &fileBefore)
	}
	return e.Strings()
}

// writeOp is one write ReadOnlyOps tries.
type writeOp struct {
	what string
	do   func() error
}

// openClose opens p with flags (and perm when creating) and closes it.
func openClose(p string, flags int, perm uint32) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, perm)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

func fileWriteOps(file, dir string) []writeOp {
	open := func(flags int) func() error { return func() error { return openClose(file, flags, 0) } }
	return []writeOp{
		{"open O_WRONLY", open(unix.O_WRONLY)},
		{"open O_RDWR", open(unix.O_RDWR)},
		{"open O_RDONLY|O_TRUNC", open(unix.O_RDONLY | unix.O_TRUNC)},
		{"open O_WRONLY|O_APPEND", open(unix.O_WRONLY | unix.O_APPEND)},
		{"truncate", func() error { return unix.Truncate(file, 0) }},
		{"chmod", func() error { return unix.Chmod(file, 0o600) }},
		{"chown", func() error { return unix.Chown(file, 4242, 4242) }},
		{"utimes", func() error { return unix.UtimesNano(file, []unix.Timespec{{Sec: 1}, {Sec: 1}}) }},
		{"setxattr", func() error { return unix.Setxattr(file, "user.nvfs.ro", []byte("x"), 0) }},
		{"removexattr", func() error { return unix.Removexattr(file, "user.nvfs.ro") }},
		{"unlink", func() error { return unix.Unlink(file) }},
		{"rename", func() error { return unix.Rename(file, file+".renamed") }},
		{"rename into a directory", func() error { return unix.Rename(file, filepath.Join(dir, "nvfs-ro-moved")) }},
		{"link", func() error { return unix.Link(file, filepath.Join(filepath.Dir(file), "nvfs-ro-hardlink")) }},
	}
}

func dirWriteOps(dir string) []writeOp {
	ops := []writeOp{
		{"create", func() error {
			return openClose(filepath.Join(dir, "nvfs-ro-new"), unix.O_CREAT|unix.O_WRONLY, 0o644)
		}},
		{"mknod fifo", func() error { return unix.Mknod(filepath.Join(dir, "nvfs-ro-fifo"), unix.S_IFIFO|0o644, 0) }},
		{"mkdir", func() error { return unix.Mkdir(filepath.Join(dir, "nvfs-ro-dir"), 0o755) }},
		{"symlink", func() error { return unix.Symlink("x", filepath.Join(dir, "nvfs-ro-link")) }},
		{"chmod dir", func() error { return unix.Chmod(dir, 0o700) }},
	}
	if !isMountRoot(dir) {
		// rmdir of a mount point is EBUSY whatever the share says
		ops = append(ops, writeOp{"rmdir", func() error { return unix.Rmdir(dir) }})
	}
	return ops
}

// isMountRoot reports whether dir is the root of a mount (statx's
// STATX_ATTR_MOUNT_ROOT, Linux 5.8; before that, a device change).
func isMountRoot(dir string) bool {
	var stx unix.Statx_t
	if unix.Statx(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, 0, &stx) == nil &&
		stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	}
	var st, parent unix.Stat_t
	return unix.Lstat(dir, &st) != nil || unix.Lstat(filepath.Join(dir, ".."), &parent) != nil || st.Dev != parent.Dev
}

// ReadOnlyTargets picks, from a manifest of a read-only tree, what
// ReadOnlyOps works on: the first empty directory (else the root ".") and
// the first non-empty regular file with one link (else any regular file,
// else none).
func (m *Manifest) ReadOnlyTargets() (dir, file string) {
	dir = "."
	children := map[string]int{}
	for _, e := range m.Entries {
		if e.Path != "." {
			children[path.Dir(e.Path)]++
		}
	}
	for _, e := range m.Entries {
		if e.Type == TypeDir && e.Path != "." && children[e.Path] == 0 {
			dir = e.Path
			break
		}
	}
	for _, e := range m.Entries {
		if e.Type != TypeFile {
			continue
		}
		if file == "" {
			file = e.Path
		}
		if e.Nlink == 1 && e.Size > 0 {
			return dir, e.Path
		}
	}
	return dir, file
}
