package sandbox

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"golang.org/x/sys/unix"
)

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) add(s string) { l.mu.Lock(); l.b.WriteString(s + "\n"); l.mu.Unlock() }
func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startHelper runs the test binary as a sandboxed helper and waits until it
// serves (or exits).
func startHelper(t *testing.T, bin string, mode Mode, share, sock string, cred *syscall.Credential) *proc {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(mode), helperShareEnv+"="+share, helperSockEnv+"="+sock,
		// Under -race the runtime sleeps 1 s at exit when threads remain,
		// past the parent's stop timeout.
		"GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd.Process, sock: sock, ready: make(chan struct{}), exited: make(chan int, 1), stderr: &lockedBuf{}}
	go func() {
		sc := bufio.NewScanner(pipe)
		once := sync.Once{}
		for sc.Scan() {
			p.stderr.add(sc.Text())
			if sc.Text() == readyLine {
				once.Do(func() { close(p.ready) })
			}
		}
		io.Copy(io.Discard, pipe)
		cmd.Wait()
		p.exited <- exitCode(cmd.ProcessState)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if p.conn != nil {
			p.conn.Close()
		}
	})
	return p
}

// waitReady waits for the helper to serve.
func (p *proc) waitReady() {
	p.t.Helper()
	select {
	case <-p.ready:
	case c := <-p.exited:
		p.exited <- c
		p.t.Fatalf("helper exited %d before it was ready\n%s", c, p.stderr)
	case <-time.After(5 * time.Second):
		p.t.Fatalf("helper never ready\n%s", p.stderr)
	}
}

func testBinary(t *testing.T) string {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root (namespaces, mounts, chroot)")
	}
}

// layout is a test directory: a share with a file, a file outside it and
// a socket path outside it.
type layout struct {
	dir, share, inside, outside, sock string
}

func newLayout(t *testing.T) layout {
	t.Helper()
	dir := t.TempDir()
	l := layout{dir: dir, share: filepath.Join(dir, "share"), outside: filepath.Join(dir, "outside"), sock: filepath.Join(dir, "s.sock")}
	l.inside = filepath.Join(l.share, "inside")
	for _, d := range []string{l.share, filepath.Join(l.share, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{l.inside, l.outside} {
		if err := os.WriteFile(f, []byte(filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func statID(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return devIno(&st)
}

// makeSharedMount binds dir onto itself with shared propagation, as Kata
// prepares its shared directory, so host mounts under it propagate.
func makeSharedMount(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
}

// childOf returns the only child of pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		if fs := strings.Fields(string(b)); len(fs) > 0 {
			c, _ := strconv.Atoi(fs[0])
			return c
		}
	}
	t.Fatalf("no child of %d", pid)
	return 0
}

// alive reports whether pid runs (a zombie nobody reaps does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// checkUnreachable asserts the outside file is not reachable by any path
// from inside, and the inside file is.
func checkUnreachable(t *testing.T, p *proc, l layout, insideAs string) {
	t.Helper()
	walk := strings.Fields(p.must("walk"))
	if id := statID(t, l.outside); slices.Contains(walk, id) {
		t.Errorf("outside file %s reachable from the sandbox's /", id)
	}
	if id := statID(t, l.inside); !slices.Contains(walk, id) {
		t.Errorf("inside file %s not found walking the sandbox's / (%d entries)", id, len(walk))
	}
	if got := p.must("stat " + insideAs); got != statID(t, l.inside) {
		t.Errorf("stat %s = %s, want the host's %s", insideAs, got, statID(t, l.inside))
	}
	for _, path := range []string{l.outside, "/../../../.." + l.outside, "../" + filepath.Base(l.outside), insideAs + "/../../outside"} {
		if out, ok := p.ask("stat " + path); ok {
			t.Errorf("stat %s from inside succeeded: %s", path, out)
		}
	}
}

func TestNamespace(t *testing.T) {
	needRoot(t)
	l := newLayout(t)
	makeSharedMount(t, l.share)
	p := startHelper(t, testBinary(t), Namespace, l.share, l.sock, nil)
	p.waitReady()

	if got := p.must("pid"); got != "1" {
		t.Errorf("pid in the sandbox = %s, want 1", got)
	}
	if got := p.must("netifs"); got != "lo" {
		t.Errorf("network interfaces = %q, want only lo", got)
	}
	if got := p.must("child"); got != "true" {
		t.Errorf("Child() = %s in the sandboxed child", got)
	}
	if got := p.must("shareddir"); got != "/" {
		t.Errorf("SharedDir = %q, want /", got)
	}
	// The root is the share itself, with nothing added (no /proc).
	if got, want := p.must("stat /"), statID(t, l.share); got != want {
		t.Errorf("/ is %s, want the share %s", got, want)
	}
	if got := p.must("ls /"); got != "inside sub" {
		t.Errorf("ls / = %q, want the share's entries only", got)
	}
	for _, path := range []string{"/proc", "/proc/self/fd", "/../proc"} {
		if out, ok := p.ask("stat " + path); ok {
			t.Errorf("stat %s in the sandbox: %s", path, out)
		}
	}
	checkUnreachable(t, p, l, "/inside")
	p.must("create /new")
	if _, err := os.Stat(filepath.Join(l.share, "new")); err != nil {
		t.Errorf("file created in / not on the host: %v", err)
	}

	// Seen from the host: the child's root is the share.
	child := childOf(t, p.cmd.Pid)
	root := "/proc/" + strconv.Itoa(child) + "/root"
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "inside new sub" {
		t.Errorf("%s holds %v", root, names)
	}
	if got := statID(t, root+"/inside"); got != statID(t, l.inside) {
		t.Errorf("%s/inside is %s, want %s", root, got, statID(t, l.inside))
	}
	if _, err := os.Stat(root + l.outside); err == nil {
		t.Errorf("%s%s exists", root, l.outside)
	}

	// What passthrough does through ProcSelfFD.
	if got := p.must("procfd /inside"); got != "yes written" {
		t.Errorf("procfd = %q", got)
	}
	if b, _ := os.ReadFile(l.inside); string(b) != "written" {
		t.Errorf("inside after procfd = %q, want %q", b, "written")
	}
	if fi, _ := os.Stat(l.inside); fi.Mode().Perm() != 0o640 {
		t.Errorf("inside mode %v after chmod through ProcSelfFD", fi.Mode())
	}

	// A mount made on the host after the sandbox started reaches it.
	sub := filepath.Join(l.share, "sub")
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(sub, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(sub, "late"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := p.must("ls /sub"); got != "late" {
		t.Errorf("host submount not propagated: ls /sub = %q", got)
	}

	// The frontend disconnects: the child exits 0 and so does the parent.
	p.conn.Close()
	if c := p.waitExit(2 * time.Second); c != 0 {
		t.Errorf("exit code %d after disconnect, want 0\n%s", c, p.stderr)
	}
	if _, err := os.Stat(l.sock); err != nil {
		t.Errorf("socket path gone after exit (the caller removes it, not the sandbox): %v", err)
	}
}

// TestNamespaceKataLayout shares a directory laid out as Kata lays out its
// shared dir: a read-only slave bind of a "mounts" directory on a shared
// mount, under which the runtime bind-mounts each container's files after
// the daemon has started.
func TestNamespaceKataLayout(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	mounts, shared, sock := filepath.Join(dir, "mounts"), filepath.Join(dir, "shared"), filepath.Join(dir, "s.sock")
	for _, d := range []string{mounts, shared, filepath.Join(mounts, "c1")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	makeSharedMount(t, mounts) // as /run is shared on a systemd host
	if err := unix.Mount(mounts, shared, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(shared, unix.MNT_DETACH) })
	for _, f := range []uintptr{unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY, unix.MS_SLAVE} {
		if err := unix.Mount("", shared, "", f, ""); err != nil {
			t.Fatal(err)
		}
	}
	p := startHelper(t, testBinary(t), Namespace, shared, sock, nil)
	p.waitReady()

	// The runtime adds a container: a bind under mounts/.
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "rootfs-file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c1 := filepath.Join(mounts, "c1")
	if err := unix.Mount(src, c1, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(c1, unix.MNT_DETACH)
	if got := p.must("ls /c1"); got != "rootfs-file" {
		t.Errorf("container bind made after start not seen: ls /c1 = %q", got)
	}
	if got, want := p.must("stat /c1/rootfs-file"), statID(t, filepath.Join(src, "rootfs-file")); got != want {
		t.Errorf("/c1/rootfs-file is %s, want %s", got, want)
	}
	// The share stays read-only, as the host made it; the container's
	// bind under it is writable.
	if out, ok := p.ask("create /new"); ok || !strings.Contains(out, "read-only") {
		t.Errorf("create in the read-only share: %v %s", ok, out)
	}
	if out, ok := p.ask("procfd /c1/rootfs-file"); !ok {
		t.Errorf("write through ProcSelfFD into the container bind: %s", out)
	}
	p.conn.Close()
	if c := p.waitExit(2 * time.Second); c != 0 {
		t.Errorf("exit code %d, want 0\n%s", c, p.stderr)
	}
}

// TestNamespaceHostRoot shares "/" itself, which must not confuse the
// construction of the new root.
func TestNamespaceHostRoot(t *testing.T) {
	needRoot(t)
	l := newLayout(t)
	p := startHelper(t, testBinary(t), Namespace, "/", l.sock, nil)
	p.waitReady()
	if got, want := p.must("stat "+l.outside), statID(t, l.outside); got != want {
		t.Errorf("stat %s = %s, want %s", l.outside, got, want)
	}
	if got, want := p.must("stat /"), statID(t, "/"); got != want {
		t.Errorf("/ is %s, want the host's / %s", got, want)
	}
	p.conn.Close()
	if c := p.waitExit(2 * time.Second); c != 0 {
		t.Errorf("exit code %d, want 0\n%s", c, p.stderr)
	}
}

func TestNamespaceExit(t *testing.T) {
	needRoot(t)
	bin := testBinary(t)
	tests := []struct {
		name string
		do   func(p *proc)
		want int
	}{
		{"disconnect", func(p *proc) { p.dial(); p.conn.Close() }, 0},
		{"sigterm before connect", func(p *proc) { p.cmd.Signal(syscall.SIGTERM) }, 0},
		{"sigterm while connected", func(p *proc) { p.must("pid"); p.cmd.Signal(syscall.SIGTERM) }, 0},
		{"sigint", func(p *proc) { p.must("pid"); p.cmd.Signal(syscall.SIGINT) }, 0},
		{"exit code", func(p *proc) { p.dial(); io.WriteString(p.conn, "exit 7\n") }, 7},
		{"child ignores sigterm", func(p *proc) { p.must("hang"); p.cmd.Signal(syscall.SIGTERM) }, 128 + 9},
		{"parent killed", func(p *proc) { p.must("pid"); p.cmd.Kill() }, 128 + 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLayout(t)
			p := startHelper(t, bin, Namespace, l.share, l.sock, nil)
			p.waitReady()
			child := childOf(t, p.cmd.Pid)
			start := time.Now()
			tc.do(p)
			// The stop timeout bounds the exit; the slack above it is for
			// a loaded 2-core host (a CI dry run beside QEMU guests once
			// took 1.4 s to reap a helper that exited on SIGTERM).
			if c := p.waitExit(DefaultStopTimeout + 2*time.Second); c != tc.want {
				t.Errorf("exit code %d, want %d\n%s", c, tc.want, p.stderr)
			}
			t.Logf("exited after %v", time.Since(start))
			// The child is gone too (Pdeathsig when the parent was killed).
			deadline := time.Now().Add(time.Second)
			for alive(child) {
				if time.Now().After(deadline) {
					t.Fatalf("child %d outlived the parent", child)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestNamespaceUnprivileged(t *testing.T) {
	needRoot(t)
	// The test binary's directory is private to root: run a copy.
	dir, err := os.MkdirTemp("", "sandbox-unpriv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "sandbox.test")
	data, err := os.ReadFile(testBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	share := filepath.Join(dir, "share")
	os.Mkdir(share, 0o755)
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o755)
	os.Chown(run, 65534, 65534)
	p := startHelper(t, bin, Namespace, share, filepath.Join(run, "s.sock"), &syscall.Credential{Uid: 65534, Gid: 65534})
	if c := p.waitExit(5 * time.Second); c != 1 {
		t.Errorf("exit code %d, want 1", c)
	}
	if !strings.Contains(p.stderr.String(), "--sandbox=chroot") {
		t.Errorf("no hint at --sandbox=chroot in:\n%s", p.stderr)
	}
}

func TestChroot(t *testing.T) {
	needRoot(t)
	l := newLayout(t)
	// A file where the socket path would point inside the share: closing
	// the listener must not unlink it.
	decoy := filepath.Join(l.share, l.sock)
	if err := os.MkdirAll(filepath.Dir(decoy), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(decoy, []byte("guest data"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startHelper(t, testBinary(t), Chroot, l.share, l.sock, nil)
	p.waitReady()
	if got := p.must("child"); got != "false" {
		t.Errorf("Child() = %s in chroot mode", got)
	}
	if got := p.must("shareddir"); got != "/" {
		t.Errorf("SharedDir = %q, want /", got)
	}
	if got, want := p.must("stat /"), statID(t, l.share); got != want {
		t.Errorf("/ is %s, want the share %s", got, want)
	}
	checkUnreachable(t, p, l, "/inside")
	if got := p.must("procfd /inside"); got != "yes written" {
		t.Errorf("procfd = %q", got)
	}
	// Every thread shares the root (Go threads are made with CLONE_FS).
	roots := strings.Fields(p.must("roots"))
	if len(roots) < 2 {
		t.Errorf("only %d threads", len(roots))
	}
	for _, r := range roots {
		if r != "/" {
			t.Errorf("a thread's root is %q, want /", r)
		}
	}
	p.conn.Close()
	if c := p.waitExit(2 * time.Second); c != 0 {
		t.Errorf("exit code %d, want 0\n%s", c, p.stderr)
	}
	if _, err := os.Stat(decoy); err != nil {
		t.Errorf("listener close removed the share's %s: %v", decoy, err)
	}
}

func TestNone(t *testing.T) {
	l := newLayout(t)
	p := startHelper(t, testBinary(t), None, l.share, l.sock, nil)
	p.waitReady()
	if got := p.must("shareddir"); got != l.share {
		t.Errorf("SharedDir = %q, want %q", got, l.share)
	}
	if got := p.must("stat " + l.outside); got != statID(t, l.outside) {
		t.Errorf("outside not reachable with --sandbox=none")
	}
	p.conn.Close()
	if c := p.waitExit(2 * time.Second); c != 0 {
		t.Errorf("exit code %d, want 0", c)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		c    Config
	}{
		{"unknown mode", Config{Mode: "jail", SharedDir: "/tmp"}},
		{"empty mode", Config{SharedDir: "/tmp"}},
		{"namespace without dir", Config{Mode: Namespace}},
		{"chroot without dir", Config{Mode: Chroot}},
		{"missing dir", Config{Mode: Namespace, SharedDir: "/nonexistent/dir"}},
		{"file as dir", Config{Mode: Chroot, SharedDir: "/proc/self/status"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.c); err == nil {
				t.Error("accepted")
			}
		})
	}
	if _, err := New(Config{Mode: None}); err != nil {
		t.Errorf("none without a directory: %v", err)
	}
}
