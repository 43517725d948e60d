package guesttests

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gone reports whether no process (or zombie) with this pid is left.
func gone(pid int) bool {
	err := syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH)
}

// TestRunFakeBackends covers backends that fail before QEMU starts: Run
// must report them quickly with the backend's output and leave no process.
func TestRunFakeBackends(t *testing.T) {
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initramfs.img")
	if err := os.WriteFile(initrd, []byte("not used"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := &Guest{Kernel: "/nonexistent", Initramfs: initrd}
	tests := []struct {
		name string
		argv []string
		want string
	}{
		{"exits at once", []string{"/bin/sh", "-c", "echo boom >&2; exit 3"}, "exited before creating its socket"},
		{"never listens", []string{"/bin/sh", "-c", "sleep 30 & wait"}, "no socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Now()
			res, err := Run(context.Background(), RunOptions{
				Guest: g, Backend: Template("fake", tt.argv), LogDir: t.TempDir(),
				SocketWait: 500 * time.Millisecond,
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want %q", err, tt.want)
			}
			if d := time.Since(t0); d > 5*time.Second {
				t.Fatalf("Run took %s", d)
			}
			if res.BackendPid == 0 || !gone(res.BackendPid) || !groupGone(res.BackendPid) {
				t.Fatalf("backend group %d still there: %v", res.BackendPid, pidsInGroup(res.BackendPid))
			}
			if tt.name == "exits at once" && !strings.Contains(err.Error(), "boom") {
				t.Fatalf("the backend's output is not in the error: %v", err)
			}
		})
	}
}

// groupGone waits (at most 2 s, for init to reap orphans) until process
// group pgid is empty.
func groupGone(pgid int) bool {
	for i := 0; i < 100; i++ {
		if len(pidsInGroup(pgid)) == 0 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// pidsInGroup lists the processes of process group pgid.
func pidsInGroup(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// TestGuestSMP: a guest the C virtiofsd serves, alone or beside another
// daemon, keeps its memory barriers ("-smp 1,maxcpus=2"); one only ours
// serves stays "-smp 1"; NVFS_GUEST_SMP overrides both.
func TestGuestSMP(t *testing.T) {
	ours := Backend{Name: "go"}
	for _, tc := range []struct {
		name string
		o    RunOptions
		env  string
		want string
	}{
		{"ours", RunOptions{Backend: ours}, "", "1"},
		{"c", RunOptions{Backend: CVirtiofsd()}, "", "1,maxcpus=2"},
		{"ours beside c", RunOptions{Backend: ours, Extra: []ExtraBackend{{Backend: CVirtiofsd()}}}, "", "1,maxcpus=2"},
		{"env", RunOptions{Backend: CVirtiofsd()}, "2", "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvGuestSMP, tc.env)
			if got := guestSMP(tc.o); got != tc.want {
				t.Fatalf("-smp %q, want %q", got, tc.want)
			}
		})
	}
}
