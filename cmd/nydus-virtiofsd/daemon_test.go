package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
)

// daemon is the built binary running as a child process, as Kata runs it.
type daemon struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
	ready  chan struct{} // closed when the waiting line was printed
	exited chan error
}

// startDaemon starts bin with args (and extra inherited files) and waits for
// "Waiting for vhost-user socket connection..." on its stderr, as Kata's
// runtime-rs does.
func startDaemon(t *testing.T, bin string, files []*os.File, args ...string) *daemon {
	t.Helper()
	d := &daemon{ready: make(chan struct{}), exited: make(chan error, 1)}
	d.cmd = exec.Command(bin, args...)
	d.cmd.ExtraFiles = files
	pipe, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		once := sync.Once{}
		for sc.Scan() {
			d.mu.Lock()
			d.stderr.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			if sc.Text() == waitingLine {
				once.Do(func() { close(d.ready) })
			}
		}
		io.Copy(io.Discard, pipe)
		d.exited <- d.cmd.Wait()
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
	})
	select {
	case <-d.ready:
	case err := <-d.exited:
		t.Fatalf("daemon exited before it was ready: %v\n%s", err, d.log())
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon never printed %q\n%s", waitingLine, d.log())
	}
	return d
}

func (d *daemon) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// wait waits for the daemon to exit and returns its exit code.
func (d *daemon) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case err := <-d.exited:
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("wait: %v", err)
	case <-time.After(within):
		t.Fatalf("daemon still running after %v\n%s", within, d.log())
	}
	return -1
}

// fuseOver returns a FUSE client whose requests travel through the driver's
// first request queue, and hiprio requests through queue 0.
func fuseOver(drv *testdriver.Driver) *fuseclient.Client {
	send := func(q int) fuseclient.SendFunc {
		return func(readable [][]byte, writable []int) ([]byte, error) {
			return drv.Submit(q, readable, writable, testdriver.Layout{})
		}
	}
	c := fuseclient.New(send(1))
	c.Hiprio = send(0)
	return c
}

// connectFUSE connects a test driver to the daemon's socket in the given
// frontend order and sends FUSE INIT through it.
func connectFUSE(t *testing.T, d *daemon, sock string, seq testdriver.Sequence) (*testdriver.Driver, *fuseclient.Client) {
	t.Helper()
	drv, err := testdriver.Connect(sock, testdriver.Options{Sequence: seq})
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, d.log())
	}
	c := fuseOver(drv)
	if _, err := c.Init(38, 0, 1<<17); err != nil {
		t.Fatalf("init: %v\n%s", err, d.log())
	}
	return drv, c
}

// shareDir makes a small directory to share.
func shareDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello, guest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// readFile looks up name in the root and reads it whole.
func readFile(t *testing.T, c *fuseclient.Client, name string) string {
	t.Helper()
	e, err := c.Lookup(fuse.FUSE_ROOT_ID, name)
	if err != nil {
		t.Fatalf("lookup %s: %v", name, err)
	}
	o, err := c.Open(e.NodeId, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	b, err := c.Read(e.NodeId, o.Fh, 0, 1<<16)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	if err := c.Release(e.NodeId, o.Fh); err != nil {
		t.Fatalf("release: %v", err)
	}
	return string(b)
}

func TestDaemonServesAndExitsOnDisconnect(t *testing.T) {
	bin := buildBinary(t)
	shapes := []struct {
		name string
		seq  testdriver.Sequence
		args func(sock, dir string) []string
	}{
		{"virtiofsd runtime-rs shape, qemu", testdriver.QEMU, func(sock, dir string) []string {
			return []string{"--socket-path", sock, "--shared-dir", dir, "--cache", "auto", "--thread-pool-size=1", "--announce-submounts", "--some-future-flag"}
		}},
		{"virtiofsd C shape on cloud-hypervisor", testdriver.CloudHypervisor, func(sock, dir string) []string {
			return []string{"--socket-path=" + sock, "-o", "source=" + dir + ",cache=always", "-o", "xattr"}
		}},
		{"no sandbox, cloud-hypervisor", testdriver.CloudHypervisor, func(sock, dir string) []string {
			return []string{"--socket-path=" + sock, "--shared-dir=" + dir, "--sandbox=none"}
		}},
		{"nydusd virtiofs shape, qemu", testdriver.QEMU, func(sock, dir string) []string {
			return []string{"virtiofs", "--hybrid-mode", "--log-level", "info", "--sock", sock, "--shared-dir", dir}
		}},
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			dir := shareDir(t)
			sock := filepath.Join(t.TempDir(), "vfs.sock")
			d := startDaemon(t, bin, nil, sh.args(sock, dir)...)
			if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("socket: %v, mode %v; want 0600", err, fi.Mode())
			}
			drv, c := connectFUSE(t, d, sock, sh.seq)
			if got := readFile(t, c, "hello.txt"); got != "hello, guest\n" {
				t.Fatalf("read = %q", got)
			}
			if err := c.Destroy(); err != nil {
				t.Fatalf("destroy: %v", err)
			}
			drv.Close()
			if code := d.wait(t, 5*time.Second); code != 0 {
				t.Fatalf("exit code %d after disconnect\n%s", code, d.log())
			}
			if _, err := os.Stat(sock); !os.IsNotExist(err) {
				t.Errorf("socket file left behind: %v", err)
			}
		})
	}
}

// TestDaemonSandboxServesShare runs the confining sandboxes: chroot
// (LXD's choice on old kernels) and namespace (the default). The daemon's
// root is the share, with no /proc in it, and what passthrough does
// through /proc/self/fd (xattrs, truncate) goes through the fd the sandbox
// opened before confinement.
func TestDaemonSandboxServesShare(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root (chroot, namespaces)")
	}
	bin := buildBinary(t)
	for _, mode := range []string{"chroot", "namespace"} {
		t.Run(mode, func(t *testing.T) { sandboxServesShare(t, bin, mode) })
	}
}

func sandboxServesShare(t *testing.T, bin, mode string) {
	dir := shareDir(t)
	sock := filepath.Join(t.TempDir(), "vfs.sock")
	d := startDaemon(t, bin, nil, "--socket-path="+sock, "--shared-dir="+dir, "--sandbox="+mode, "--xattr")
	t.Cleanup(func() { os.Remove(sock) }) // a chrooted daemon cannot remove it
	if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", d.cmd.Process.Pid)); mode == "chroot" && (err != nil || root != dir) {
		t.Fatalf("daemon root %q %v, want %s", root, err, dir)
	}
	drv, c := connectFUSE(t, d, sock, testdriver.QEMU)
	e, err := c.Lookup(fuse.FUSE_ROOT_ID, "hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	set := fuse.SetXAttrIn{Size: 2}
	if _, err := c.Call(21, e.NodeId, fuseclient.Bytes(&set)[40:48], []byte("user.k\x00ok"), 0, 0); err != nil {
		t.Fatalf("SETXATTR: %v\n%s", err, d.log())
	}
	get := fuse.GetXAttrIn{Size: 16}
	if b, err := c.Call(22, e.NodeId, fuseclient.Bytes(&get)[40:], []byte("user.k\x00"), 0, 16); err != nil || string(b) != "ok" {
		t.Fatalf("GETXATTR: %q %v", b, err)
	}
	buf := make([]byte, 4)
	if n, err := syscall.Getxattr(filepath.Join(dir, "hello.txt"), "user.k", buf); err != nil || string(buf[:n]) != "ok" {
		t.Fatalf("xattr on the host: %q %v", buf[:max(n, 0)], err)
	}
	trunc := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_SIZE, Size: 5}}
	if _, err := c.Call(4, e.NodeId, fuseclient.Bytes(&trunc)[40:], nil, 0, int(unsafe.Sizeof(fuse.AttrOut{}))); err != nil {
		t.Fatalf("SETATTR size: %v\n%s", err, d.log())
	}
	if got := readFile(t, c, "hello.txt"); got != "hello" {
		t.Fatalf("read after truncate = %q", got)
	}
	drv.Close()
	if code := d.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after disconnect\n%s", code, d.log())
	}
}

func TestDaemonSignals(t *testing.T) {
	bin := buildBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "vfs.sock")
			d := startDaemon(t, bin, nil, "--socket-path="+sock, "--shared-dir="+shareDir(t))
			// A frontend is connected and idle: the signal must still end
			// the daemon promptly.
			drv, _ := connectFUSE(t, d, sock, testdriver.QEMU)
			defer drv.Close()
			d.cmd.Process.Signal(sig)
			if code := d.wait(t, time.Second); code != 0 {
				t.Fatalf("exit code %d after %v\n%s", code, sig, d.log())
			}
		})
	}
}

// TestDaemonInheritedFD runs the Go Kata runtime's shape: the runtime makes
// the listening socket and passes it as fd 3.
func TestDaemonInheritedFD(t *testing.T) {
	bin := buildBinary(t)
	sock := filepath.Join(t.TempDir(), "vfs.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	d := startDaemon(t, bin, []*os.File{f}, "--syslog", "--cache=auto", "--shared-dir="+shareDir(t), "--fd=3", "--thread-pool-size=1", "--announce-submounts", "--xattr")
	f.Close()
	drv, c := connectFUSE(t, d, sock, testdriver.CloudHypervisor)
	if got := readFile(t, c, "hello.txt"); got != "hello, guest\n" {
		t.Fatalf("read = %q", got)
	}
	drv.Close()
	if code := d.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d\n%s", code, d.log())
	}
}

func TestDaemonKeepListening(t *testing.T) {
	bin := buildBinary(t)
	sock := filepath.Join(t.TempDir(), "vfs.sock")
	d := startDaemon(t, bin, nil, "--socket-path="+sock, "--shared-dir="+shareDir(t), "--keep-listening")
	for i := 0; i < 2; i++ {
		drv, c := connectFUSE(t, d, sock, testdriver.QEMU)
		if got := readFile(t, c, "hello.txt"); got != "hello, guest\n" {
			t.Fatalf("frontend %d read = %q", i, got)
		}
		drv.Close()
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(t, time.Second); code != 0 {
		t.Fatalf("exit code %d\n%s", code, d.log())
	}
}

func TestDaemonServesRAFSImage(t *testing.T) {
	bin := buildBinary(t)
	v5 := filepath.Join(fixtures, "v5-repeatable")
	sock := filepath.Join(t.TempDir(), "vfs.sock")
	d := startDaemon(t, bin, nil, "--socket-path="+sock,
		"--bootstrap="+filepath.Join(v5, "sha256-nocompress-repeatable"), "--blob-dir="+filepath.Join(v5, "blobs"))
	drv, c := connectFUSE(t, d, sock, testdriver.QEMU)
	defer drv.Close()
	e, err := c.Lookup(fuse.FUSE_ROOT_ID, "hardlink-test")
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.Lookup(e.NodeId, "foo")
	if err != nil {
		t.Fatal(err)
	}
	// PROVENANCE.md: 944 bytes, nlink 3.
	if f.Attr.Size != 944 || f.Attr.Nlink != 3 {
		t.Fatalf("hardlink-test/foo: size %d nlink %d; want 944, 3", f.Attr.Size, f.Attr.Nlink)
	}
	if _, err := c.Mkdir(fuse.FUSE_ROOT_ID, "new", 0o755); err == nil {
		t.Fatal("mkdir on a RAFS image succeeded; want EROFS")
	}
}

func TestDaemonBadCommandLines(t *testing.T) {
	bin := buildBinary(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--shared-dir=/tmp"}, "--socket-path or --fd"},
		{[]string{"--socket-path=/tmp/x.sock", "--cache=sometimes", "--shared-dir=/tmp"}, "--cache"},
		{[]string{"--socket-path=/tmp/x.sock", "--shared-dir=/nonexistent/dir"}, "/nonexistent/dir"},
	}
	for _, tc := range tests {
		out, err := exec.Command(bin, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%q: err=%v, output %q; want a failure mentioning %q", tc.args, err, out, tc.want)
		}
	}
	out, err := exec.Command(bin, "--print-capabilities").Output()
	if err != nil || !strings.Contains(string(out), `"type": "fs"`) {
		t.Errorf("--print-capabilities: %v %q", err, out)
	}
}
