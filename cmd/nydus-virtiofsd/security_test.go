package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

// servingPid is the process that serves: the daemon itself, or in
// namespace mode its re-executed child.
func servingPid(t *testing.T, d *daemon, mode string) int {
	pid := d.cmd.Process.Pid
	if mode != "namespace" {
		return pid
	}
	// children lists those forked by each thread.
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var f []string
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f = append(f, strings.Fields(string(b))...)
	}
	if len(f) != 1 {
		t.Fatalf("namespace parent has children %q", f)
	}
	child, _ := strconv.Atoi(f[0])
	return child
}

// taskStatus reads the security fields of every thread of pid.
func taskStatus(t *testing.T, pid int) []map[string]string {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("tasks of %d: %v", pid, err)
	}
	var out []map[string]string
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{"task": p}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				m[k] = strings.TrimSpace(v)
			}
		}
		out = append(out, m)
	}
	return out
}

func capMask(bits ...int) string {
	var m uint64
	for _, b := range bits {
		m |= 1 << b
	}
	return fmt.Sprintf("%016x", m)
}

// Capability numbers (linux/capability.h).
const (
	capChown, capDacOverride, capDacReadSearch, capFowner, capFsetid = 0, 1, 2, 3, 4
	capSetgid, capSetuid, capSysAdmin, capMknod, capSetfcap          = 6, 7, 21, 27, 31
)

// TestDaemonConfined checks, from /proc/PID/status of every thread of the
// serving process, that the daemon keeps only virtiofsd's capabilities
// (changed by --modcaps), has no_new_privs and a seccomp filter (none
// with --seccomp=none), and still serves: lookups, reads, xattrs and
// creations pass the filter, and a guest trusted.* xattr is refused.
func TestDaemonConfined(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root (capabilities to drop, sandboxes)")
	}
	bin := buildBinary(t)
	// Without file handles (the default) no CAP_DAC_READ_SEARCH.
	base := []int{capChown, capDacOverride, capFowner, capFsetid, capSetgid, capSetuid, capMknod, capSetfcap}
	// A container that gave the daemon fewer capabilities (no SETPCAP, so
	// the bounding set stays as it came).
	var fullBnd uint64
	for _, st := range taskStatus(t, os.Getpid())[:1] {
		fullBnd, _ = strconv.ParseUint(st["CapBnd"], 16, 64)
	}
	const capSetpcap = 8
	reducedBnd := fmt.Sprintf("%016x", fullBnd&^(1<<capSetpcap|1<<capSysAdmin|1<<capMknod))
	cases := []struct {
		name, mode string
		args       []string
		caps       []int
		seccomp    string
		prefix     []string // run under this (setpriv)
		bnd        string   // CapBnd when not the kept set
	}{
		{"namespace default", "namespace", nil, base, "2", nil, ""},
		{"chroot", "chroot", nil, base, "2", nil, ""},
		{"none modcaps", "none", []string{"--modcaps=+sys_admin:-mknod", "--seccomp=log"},
			[]int{capChown, capDacOverride, capFowner, capFsetid, capSetgid, capSetuid, capSysAdmin, capSetfcap}, "2", nil, ""},
		{"file handles, no seccomp", "none", []string{"--inode-file-handles=prefer", "--seccomp=none"},
			[]int{capChown, capDacOverride, capDacReadSearch, capFowner, capFsetid, capSetgid, capSetuid, capMknod, capSetfcap}, "0", nil, ""},
		{"fewer capabilities given", "none", []string{"--inode-file-handles=prefer"},
			[]int{capChown, capDacOverride, capDacReadSearch, capFowner, capFsetid, capSetgid, capSetuid, capSetfcap}, "2",
			[]string{"setpriv", "--bounding-set=-setpcap,-sys_admin,-mknod", "--inh-caps=-all", "--"}, reducedBnd},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := shareDir(t)
			sock := filepath.Join(t.TempDir(), "vfs.sock")
			args := append([]string{"--socket-path=" + sock, "--shared-dir=" + dir, "--sandbox=" + tc.mode, "--xattr"}, tc.args...)
			cmd := bin
			if tc.prefix != nil {
				p, err := exec.LookPath(tc.prefix[0])
				if err != nil {
					testenv.Skipf(t, "%s: %v", tc.prefix[0], err)
				}
				cmd, args = p, append(append(tc.prefix[1:len(tc.prefix):len(tc.prefix)], bin), args...)
			}
			d := startDaemon(t, cmd, nil, args...)
			t.Cleanup(func() { os.Remove(sock) })
			pid := servingPid(t, d, tc.mode)
			drv, c := connectFUSE(t, d, sock, testdriver.QEMU)
			if got := readFile(t, c, "hello.txt"); got != "hello, guest\n" {
				t.Fatalf("read = %q\n%s", got, d.log())
			}
			e, err := c.Lookup(fuse.FUSE_ROOT_ID, "hello.txt")
			if err != nil {
				t.Fatal(err)
			}
			set := fuse.SetXAttrIn{Size: 2}
			if _, err := c.Call(21, e.NodeId, fuseclient.Bytes(&set)[40:48], []byte("user.k\x00ok"), 0, 0); err != nil {
				t.Fatalf("SETXATTR user.k: %v\n%s", err, d.log())
			}
			if _, err := c.Call(21, e.NodeId, fuseclient.Bytes(&set)[40:48], []byte("trusted.overlay.redirect\x00/x"), 0, 0); err == nil {
				t.Fatalf("SETXATTR trusted.overlay.redirect accepted")
			}
			if _, err := c.Mkdir(fuse.FUSE_ROOT_ID, "newdir", 0o755); err != nil {
				t.Fatalf("MKDIR: %v\n%s", err, d.log())
			}
			co, err := c.Create(fuse.FUSE_ROOT_ID, "newfile", uint32(os.O_WRONLY), 0o644)
			if err != nil {
				t.Fatalf("CREATE: %v\n%s", err, d.log())
			}
			if _, err := c.Write(co.NodeId, co.Fh, 0, []byte("w")); err != nil {
				t.Fatalf("WRITE: %v\n%s", err, d.log())
			}
			c.Release(co.NodeId, co.Fh)
			// linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH, kept only
			// with file handles: without, LINK goes through /proc/self/fd.
			if _, err := c.Link(co.NodeId, fuse.FUSE_ROOT_ID, "newlink"); err != nil {
				t.Fatalf("LINK: %v\n%s", err, d.log())
			}
			dh, err := c.OpenDir(fuse.FUSE_ROOT_ID)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.ReadDirPlus(fuse.FUSE_ROOT_ID, dh.Fh, 0, 4096); err != nil {
				t.Fatalf("READDIRPLUS: %v\n%s", err, d.log())
			}
			c.ReleaseDir(fuse.FUSE_ROOT_ID, dh.Fh)
			if _, err := os.Stat(filepath.Join(dir, "newdir")); err != nil {
				t.Fatal(err)
			}
			if a, b := statIno(t, filepath.Join(dir, "newfile")), statIno(t, filepath.Join(dir, "newlink")); a != b {
				t.Fatalf("newlink is inode %d, newfile %d: not a hard link", b, a)
			}
			want := capMask(tc.caps...)
			for _, st := range taskStatus(t, pid) {
				for _, k := range []string{"CapEff", "CapPrm", "CapBnd"} {
					w := want
					if k == "CapBnd" && tc.bnd != "" {
						w = tc.bnd
					}
					if st[k] != w {
						t.Errorf("%s %s = %s, want %s", st["task"], k, st[k], w)
					}
				}
				if st["CapInh"] != capMask() || st["CapAmb"] != capMask() {
					t.Errorf("%s CapInh %s CapAmb %s, want none", st["task"], st["CapInh"], st["CapAmb"])
				}
				if st["NoNewPrivs"] != "1" || st["Seccomp"] != tc.seccomp {
					t.Errorf("%s NoNewPrivs %s Seccomp %s, want 1 and %s", st["task"], st["NoNewPrivs"], st["Seccomp"], tc.seccomp)
				}
			}
			drv.Close()
			if code := d.wait(t, 5*time.Second); code != 0 {
				t.Fatalf("exit code %d\n%s", code, d.log())
			}
		})
	}
}

func TestParseSecurityFlags(t *testing.T) {
	c, err := parseVirtiofsd([]string{"--socket-path=/s", "--shared-dir=/d", "--modcaps=+sys_admin:-mknod", "--seccomp=log", "--xattrmap=:map:trusted.:user.virtiofs.:"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Security.ModCaps != "+sys_admin:-mknod" || c.Security.Seccomp != "log" || c.xattrMap() == nil {
		t.Fatalf("parsed %+v", c.Security)
	}
	c, err = parseVirtiofsd([]string{"--socket-path=/s", "-o", "source=/d,xattrmap=/ok/all///,modcaps=-chown"})
	if err != nil || c.Security.XattrMap != "/ok/all///" || c.Security.ModCaps != "-chown" {
		t.Fatalf("-o: %+v %v", c.Security, err)
	}
	for _, bad := range [][]string{{"--seccomp=maybe"}, {"--modcaps=sys_admin"}, {"--modcaps=+nope"}, {"--xattrmap=:what:all:::"}} {
		if _, err := parseVirtiofsd(append([]string{"--socket-path=/s", "--shared-dir=/d"}, bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if c, _ := parseVirtiofsd([]string{"--socket-path=/s", "--shared-dir=/d"}); c.xattrMap() != nil {
		t.Error("virtiofsd mode has a map by default (passthrough's default refuses trusted.*)")
	}
}

// statIno is the host inode number of path.
func statIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
