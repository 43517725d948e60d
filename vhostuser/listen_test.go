package vhostuser_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// connectAs connects to the unix socket at path from an OS thread whose
// filesystem credentials are uid and gid with no supplementary groups (a
// VMM running as another user): setfsuid to a non-zero uid also drops the
// thread's CAP_DAC_OVERRIDE, so the socket's mode decides. The thread is
// never handed back to the runtime (it exits with the goroutine).
func connectAs(t *testing.T, path string, uid, gid int) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // no unlock: the thread dies with this goroutine
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
			done <- e
			return
		}
		unix.SetfsgidRetGid(gid)
		unix.SetfsuidRetUid(uid)
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		done <- unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	}()
	return <-done
}

// TestListenGroup checks virtiofsd's --socket-group: a VMM running as
// another user connects through the socket's group, and only through it.
func TestListenGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root (chown, and connecting as another user)")
	}
	// A directory others may search (t.TempDir is 0700).
	dir, err := os.MkdirTemp("", "listen-group-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const vmmUID, vmmGID, otherGID = 65534, 4242, 4243
	for _, tc := range []struct {
		name     string
		listen   func(string) (interface{ Close() error }, error)
		wantGID  uint32
		wantMode os.FileMode
		memberOK bool
	}{
		{"group", func(p string) (interface{ Close() error }, error) { return vhostuser.ListenGroup(p, vmmGID) }, vmmGID, 0o660, true},
		{"no-group", func(p string) (interface{ Close() error }, error) { return vhostuser.Listen(p) }, 0, 0o600, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".sock")
			l, err := tc.listen(path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var st unix.Stat_t
			if err := unix.Lstat(path, &st); err != nil {
				t.Fatal(err)
			}
			if st.Gid != tc.wantGID || os.FileMode(st.Mode&0o777) != tc.wantMode {
				t.Errorf("socket gid %d mode %o, want gid %d mode %o", st.Gid, st.Mode&0o777, tc.wantGID, tc.wantMode)
			}
			err = connectAs(t, path, vmmUID, vmmGID)
			if tc.memberOK && err != nil {
				t.Errorf("a user in the socket's group cannot connect: %v", err)
			}
			if !tc.memberOK && !errors.Is(err, unix.EACCES) {
				t.Errorf("a user in group %d connected to a socket of mode %o: %v, want EACCES", vmmGID, tc.wantMode, err)
			}
			if err := connectAs(t, path, vmmUID, otherGID); !errors.Is(err, unix.EACCES) {
				t.Errorf("a user in another group: %v, want EACCES", err)
			}
		})
	}
}
