package passthrough

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const testUID, testGID = 1000, 1000

// TestOwnershipNonRootCaller: a non-root process creates through the mount
// (allow_other, default_permissions); the host sees the caller as owner, the
// setgid directory's group, and suid cleared on its write.
func TestOwnershipNonRootCaller(t *testing.T) {
	e := mountEnv(t, Options{Xattr: true})
	for d := filepath.Dir(e.mnt); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // t.TempDir is 0700
	}
	os.Mkdir(e.host("pub"), 0o777)
	unix.Chmod(e.host("pub"), 0o1777)
	os.Mkdir(e.host("sg"), 0o777)
	os.Chown(e.host("sg"), 0, 4321)
	unix.Chmod(e.host("sg"), 0o2777)
	os.Mkdir(e.host("closed"), 0o755)
	os.WriteFile(e.host("pub", "suid"), []byte("x"), 0o777)
	unix.Chmod(e.host("pub", "suid"), 0o6777)
	script := `set -e
umask 022
cd "$1/pub"
echo hi > f; mkdir d; mkfifo p; ln -s tgt s
echo more >> suid
cd "$1/sg"; echo x > g; mkdir gd
if echo no > "$1/closed/x" 2>/dev/null; then exit 3; fi
`
	cmd := exec.Command("/bin/sh", "-c", script, "sh", e.mnt)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testUID, Gid: testGID, Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid %d: %v: %s", testUID, err, out)
	}
	for _, c := range []struct {
		path     []string
		uid, gid uint32
		mode     uint32 // checked when non-zero (permission and type bits)
	}{
		{[]string{"pub", "f"}, testUID, testGID, 0},
		{[]string{"pub", "d"}, testUID, testGID, 0},
		{[]string{"pub", "p"}, testUID, testGID, syscall.S_IFIFO | 0o644},
		{[]string{"pub", "s"}, testUID, testGID, 0},
		{[]string{"sg", "g"}, testUID, 4321, 0},
		{[]string{"sg", "gd"}, testUID, 4321, syscall.S_IFDIR | 0o2755},
		{[]string{"pub", "suid"}, 0, 0, syscall.S_IFREG | 0o777},
	} {
		st := mustStat(t, e.host(c.path...))
		if st.Uid != c.uid || st.Gid != c.gid || (c.mode != 0 && st.Mode != c.mode) {
			t.Errorf("%v: uid %d gid %d mode %o; want %d %d %o", c.path, st.Uid, st.Gid, st.Mode, c.uid, c.gid, c.mode)
		}
	}
	if _, err := os.Stat(e.host("closed", "x")); !os.IsNotExist(err) {
		t.Errorf("created in a closed directory: %v", err)
	}
	// Root's creations stay root's: no thread was left switched.
	os.WriteFile(e.via("pub", "rootfile"), nil, 0o644)
	if st := mustStat(t, e.host("pub", "rootfile")); st.Uid != 0 || st.Gid != 0 {
		t.Errorf("root's file owned by %d:%d", st.Uid, st.Gid)
	}
}

// TestCredentialsRaw: the host kernel enforces the caller's rights itself
// (not only the guest kernel), and concurrent root and non-root creations
// never get each other's identity.
func TestCredentialsRaw(t *testing.T) {
	e := newEnv(t, Options{})
	os.Mkdir(e.host("closed"), 0o755)
	os.Mkdir(e.host("pub"), 0o777)
	unix.Chmod(e.host("pub"), 0o777)
	closed := e.lookup(t, 1, "closed").NodeId
	pub := e.lookup(t, 1, "pub").NodeId
	user := fuse.Caller{Owner: fuse.Owner{Uid: testUID, Gid: testGID}}
	var eo fuse.EntryOut
	in := fuse.MkdirIn{InHeader: fuse.InHeader{NodeId: closed, Caller: user}, Mode: 0o755}
	if s := e.fs.Mkdir(nil, &in, "x", &eo); s != fuse.EACCES {
		t.Fatalf("mkdir in a root 0755 directory as uid %d: %v, want EACCES", testUID, s)
	}
	// CAP_MKNOD goes with the fsuid switch: an unprivileged caller cannot
	// make device nodes on the host even if the guest kernel let it ask.
	mk := fuse.MknodIn{InHeader: fuse.InHeader{NodeId: pub, Caller: user}, Mode: syscall.S_IFCHR | 0o666, Rdev: uint32(unix.Mkdev(1, 1))}
	if s := e.fs.Mknod(nil, &mk, "mem", &eo); s != fuse.EPERM {
		t.Fatalf("mknod of a device as uid %d: %v, want EPERM", testUID, s)
	}
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			caller := fuse.Caller{}
			if i%2 == 1 {
				caller = user
			}
			var out fuse.CreateOut
			in := fuse.CreateIn{InHeader: fuse.InHeader{NodeId: pub, Caller: caller}, Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}
			if s := e.fs.Create(nil, &in, "f"+strconv.Itoa(i), &out); !s.Ok() {
				t.Errorf("create %d: %v", i, s)
				return
			}
			e.fs.Release(nil, &fuse.ReleaseIn{Fh: out.Fh})
		}(i)
	}
	wg.Wait()
	for i := 0; i < 64; i++ {
		want := uint32(0)
		if i%2 == 1 {
			want = testUID
		}
		if st := mustStat(t, e.host("pub", "f"+strconv.Itoa(i))); st.Uid != want || st.Gid != want {
			t.Errorf("f%d owned by %d:%d, want %d", i, st.Uid, st.Gid, want)
		}
	}
	if fsuid() != 0 || fsgid() != 0 {
		t.Fatalf("test goroutine's thread left with fsuid %d fsgid %d", fsuid(), fsgid())
	}
}

// TestWriteKillPriv: FUSE_WRITE_KILL_SUIDGID clears suid, and sgid only
// with group execute.
func TestWriteKillPriv(t *testing.T) {
	e := newEnv(t, Options{})
	for _, c := range []struct{ mode, want uint32 }{
		{0o6755, 0o0755},
		{0o6745, 0o2745},
		{0o0755, 0o0755},
	} {
		os.WriteFile(e.host("k"), nil, 0o644)
		unix.Chmod(e.host("k"), c.mode)
		node := e.lookup(t, 1, "k").NodeId
		var oo fuse.OpenOut
		if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(node), Flags: unix.O_WRONLY}, &oo); !s.Ok() {
			t.Fatal(s)
		}
		in := fuse.WriteIn{InHeader: hdr(node), Fh: oo.Fh, WriteFlags: fuse.WRITE_KILL_SUIDGID}
		if n, s := e.fs.Write(nil, &in, []byte("abc")); !s.Ok() || n != 3 {
			t.Fatalf("write: %d %v", n, s)
		}
		e.fs.Release(nil, &fuse.ReleaseIn{Fh: oo.Fh})
		if st := mustStat(t, e.host("k")); st.Mode&07777 != c.want {
			t.Errorf("mode %o after write: %o, want %o", c.mode, st.Mode&07777, c.want)
		}
		os.Remove(e.host("k"))
	}
}

// TestModesIgnoreDaemonUmask: the daemon's umask does not take bits from
// the modes the guest sends, and what the kernel decides (setgid inherited
// from the directory) stays.
func TestModesIgnoreDaemonUmask(t *testing.T) {
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	e := newEnv(t, Options{})
	os.Mkdir(e.host("sg"), 0o700)
	unix.Chmod(e.host("sg"), 0o2777)
	sg := e.lookup(t, 1, "sg").NodeId
	var eo fuse.EntryOut
	var co fuse.CreateOut
	h := hdr(sg)
	calls := map[string]func() fuse.Status{
		"dir": func() fuse.Status { return e.fs.Mkdir(nil, &fuse.MkdirIn{InHeader: h, Mode: 0o777}, "dir", &eo) },
		"fifo": func() fuse.Status {
			return e.fs.Mknod(nil, &fuse.MknodIn{InHeader: h, Mode: syscall.S_IFIFO | 0o666}, "fifo", &eo)
		},
		"file": func() fuse.Status {
			return e.fs.Create(nil, &fuse.CreateIn{InHeader: h, Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o666}, "file", &co)
		},
		"private": func() fuse.Status { return e.fs.Mkdir(nil, &fuse.MkdirIn{InHeader: h, Mode: 0o700}, "private", &eo) },
	}
	want := map[string]uint32{"dir": syscall.S_IFDIR | 0o2777, "fifo": syscall.S_IFIFO | 0o666, "file": syscall.S_IFREG | 0o666, "private": syscall.S_IFDIR | 0o2700}
	for name, call := range calls {
		if s := call(); !s.Ok() {
			t.Fatalf("%s: %v", name, s)
		}
		if st := mustStat(t, e.host("sg", name)); st.Mode != want[name] {
			t.Errorf("%s: mode %o, want %o", name, st.Mode, want[name])
		}
	}
}

// TestSetfsuidIsPerThread verifies what the credential switch relies on:
// x/sys/unix's setfsuid/setfsgid change only the calling OS thread (a plain
// syscall, not the all-threads broadcast setuid uses).
func TestSetfsuidIsPerThread(t *testing.T) {
	requireRoot(t)
	switched, checked, restore := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var other [2]int
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		oldG, _ := unix.SetfsgidRetGid(testGID)
		oldU, _ := unix.SetfsuidRetUid(testUID)
		close(switched)
		<-checked
		unix.SetfsuidRetUid(oldU)
		unix.SetfsgidRetGid(oldG)
		close(restore)
	}()
	<-switched
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		other = [2]int{fsuid(), fsgid()}
	}()
	close(checked)
	<-restore
	if other != [2]int{0, 0} {
		t.Fatalf("another thread saw fsuid/fsgid %v while one thread was switched", other)
	}
}

// TestKillPrivOnTruncate: with killpriv_v2 the kernel asks the server to
// clear suid/sgid on a truncating open (OPEN_KILL_SUIDGID) or setattr
// (FATTR_KILL_SUIDGID).
func TestKillPrivOnTruncate(t *testing.T) {
	e := newEnv(t, Options{})
	os.WriteFile(e.host("k"), []byte("data"), 0o755)
	node := e.lookup(t, 1, "k").NodeId
	unix.Chmod(e.host("k"), 0o6755)
	var oo fuse.OpenOut
	if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(node), Flags: unix.O_WRONLY | unix.O_TRUNC, Mode: fuse.OPEN_KILL_SUIDGID}, &oo); !s.Ok() {
		t.Fatal(s)
	}
	e.fs.Release(nil, &fuse.ReleaseIn{Fh: oo.Fh})
	if st := mustStat(t, e.host("k")); st.Mode&07777 != 0o755 || st.Size != 0 {
		t.Fatalf("after O_TRUNC open: mode %o size %d", st.Mode&07777, st.Size)
	}
	unix.Chmod(e.host("k"), 0o6755)
	var ao fuse.AttrOut
	in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: hdr(node), Valid: fuse.FATTR_SIZE | fuse.FATTR_KILL_SUIDGID, Size: 10}}
	if s := e.fs.SetAttr(nil, &in, &ao); !s.Ok() {
		t.Fatal(s)
	}
	if st := mustStat(t, e.host("k")); st.Mode&07777 != 0o755 || st.Size != 10 || ao.Attr.Mode&07777 != 0o755 {
		t.Fatalf("after setattr: mode %o size %d (reply %o)", st.Mode&07777, st.Size, ao.Attr.Mode&07777)
	}
}
