package vhostuser_test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// exhaustFds lowers the soft RLIMIT_NOFILE to a little above the fds open
// now and opens eventfds until EMFILE, as a guest holding every fd it can
// get does. Cleanup closes them and restores the limit.
func exhaustFds(t *testing.T) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	lim := old
	lim.Cur = uint64(fd) + 64
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var hogs []int
	t.Cleanup(func() {
		for _, fd := range hogs {
			unix.Close(fd)
		}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
			t.Error(err)
		}
	})
	for {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err == unix.EMFILE {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, fd)
		if len(hogs) > 1<<16 {
			t.Fatal("no EMFILE after 65536 fds")
		}
	}
}

// A ring restart while the process is out of fds (the guest took them
// all) must not end the session: the kick fd arrives thanks to the
// connection's fd reserve and the ring runs again.
func TestRingRestartOutOfFds(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1})
	d := connect(t, s, testdriver.Options{Sequence: testdriver.QEMU, RequestQueues: 1, QueueSize: 8})
	wantEcho(t, d, 1, []byte("before"), testdriver.Layout{})
	exhaustFds(t)
	for i := 0; i < 3; i++ {
		base, err := d.StopQueue(1)
		if err != nil {
			t.Fatalf("restart %d: GET_VRING_BASE: %v", i, err)
		}
		if err := d.StartQueue(1, base); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		wantEcho(t, d, 1, []byte("after restart"), testdriver.Layout{})
	}
	select {
	case err := <-s.done:
		t.Fatalf("Serve returned while out of fds: %v", err)
	default:
	}
}
