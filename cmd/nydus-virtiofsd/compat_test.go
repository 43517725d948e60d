package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

// TestDaemonVirtiofsdSocketAndLimits runs the daemon with virtiofsd's
// --socket-group, --rlimit-nofile and --no-readdirplus (and -o
// no_readdirplus), each against a run without it, and checks what each
// changes: the socket's group and mode, the process's RLIMIT_NOFILE, and
// whether INIT offers READDIRPLUS to a guest that proposes it. A Go
// program's soft RLIMIT_NOFILE is raised to the hard limit by the runtime
// at start, so --rlimit-nofile=0 ("leave it") and the default both end at
// the hard limit; the 0 row checks that 0 is not applied as a limit (the
// daemon could open nothing), the 4096 row that N is.
func TestDaemonVirtiofsdSocketAndLimits(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root (socket group, raising RLIMIT_NOFILE)")
	}
	bin := buildBinary(t)
	const gid = 4242
	var hard syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &hard); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		args      []string
		wantGID   uint32
		wantMode  os.FileMode
		wantFiles string // the "Max open files" soft and hard limits
		plus      bool   // INIT offers READDIRPLUS
	}{
		{"defaults", nil, 0, 0o600, fmt.Sprintf("%d %d", hard.Max, hard.Max), true},
		{"virtiofsd options", []string{"--socket-group", fmt.Sprint(gid), "--rlimit-nofile=4096", "--no-readdirplus"}, gid, 0o660, "4096 4096", false},
		{"rlimit 0 leaves it, -o no_readdirplus", []string{"--rlimit-nofile=0", "-o", "no_readdirplus"}, 0, 0o600, fmt.Sprintf("%d %d", hard.Max, hard.Max), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "vfs.sock")
			args := append([]string{"--socket-path", sock, "--shared-dir", shareDir(t)}, tc.args...)
			d := startDaemon(t, bin, nil, args...)
			var st syscall.Stat_t
			if err := syscall.Lstat(sock, &st); err != nil {
				t.Fatal(err)
			}
			if st.Gid != tc.wantGID || os.FileMode(st.Mode&0o777) != tc.wantMode {
				t.Errorf("socket gid %d mode %o, want gid %d mode %o", st.Gid, st.Mode&0o777, tc.wantGID, tc.wantMode)
			}
			limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", d.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			m := regexp.MustCompile(`Max open files +(\d+) +(\d+)`).FindSubmatch(limits)
			if m == nil || string(m[1])+" "+string(m[2]) != tc.wantFiles {
				t.Errorf("daemon's open file limits %q, want %s", m, tc.wantFiles)
			}
			drv, err := testdriver.Connect(sock, testdriver.Options{Sequence: testdriver.QEMU})
			if err != nil {
				t.Fatalf("connect: %v\n%s", err, d.log())
			}
			c := fuseOver(drv)
			out, err := c.Init(38, fuse.CAP_READDIRPLUS|fuse.CAP_READDIRPLUS_AUTO|fuse.CAP_ASYNC_READ, 1<<17)
			if err != nil {
				t.Fatalf("init: %v\n%s", err, d.log())
			}
			if got := out.Flags&fuse.CAP_READDIRPLUS != 0; got != tc.plus {
				t.Errorf("INIT offers READDIRPLUS: %v, want %v (flags %#x)", got, tc.plus, out.Flags)
			}
			if got := readFile(t, c, "hello.txt"); got != "hello, guest\n" {
				t.Errorf("read = %q", got)
			}
			drv.Close()
			if code := d.wait(t, 5*time.Second); code != 0 {
				t.Errorf("exit code %d\n%s", code, d.log())
			}
		})
	}
}

// TestDaemonSocketGroupUnknown: a group that does not exist stops the
// daemon before it listens, as virtiofsd does, naming the group.
func TestDaemonSocketGroupUnknown(t *testing.T) {
	bin := buildBinary(t)
	sock := filepath.Join(t.TempDir(), "vfs.sock")
	// Bounded: a daemon that ignored the group would wait for a VMM.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, bin, "--socket-path", sock, "--shared-dir", t.TempDir(), "--socket-group", "no-such-group-here").CombinedOutput()
	out := string(b)
	if err == nil {
		t.Fatalf("daemon started with an unknown socket group:\n%s", out)
	}
	if !regexp.MustCompile(`--socket-group=no-such-group-here: no such group`).MatchString(out) {
		t.Errorf("error does not name the group:\n%s", out)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}
