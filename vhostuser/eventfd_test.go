package vhostuser

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newTestEventfd returns a non-blocking eventfd, as QEMU makes its kick
// and call eventfds.
func newTestEventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatalf("eventfd: %v", err)
	}
	return fd
}

// polledFds lists the fds registered with any epoll instance of this
// process (the Go runtime's netpoller among them), from the "tfd:" lines
// of each epoll fd's /proc/self/fdinfo entry.
func polledFds(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	polled := map[int]bool{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || target != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "tfd:" {
				if n, err := strconv.Atoi(f[1]); err == nil {
					polled[n] = true
				}
			}
		}
	}
	return polled
}

// TestEventFDOutsideRuntimePoller checks what eventFD is for: an eventfd
// used through it is never registered with the runtime's epoll (so the
// frontend's writes and reads do not wake the netpoller), where the same
// kind of fd wrapped by os.NewFile is.
func TestEventFDOutsideRuntimePoller(t *testing.T) {
	wrapped := os.NewFile(uintptr(newTestEventfd(t)), "wrapped")
	defer wrapped.Close()
	if _, err := wrapped.Write(eventOne[:]); err != nil {
		t.Fatal(err)
	}
	rawFd := newTestEventfd(t)
	e := newEventFD(rawFd)
	defer e.Close()
	if _, err := e.Write(eventOne[:]); err != nil {
		t.Fatal(err)
	}
	var buf [8]byte
	if n, err := e.Read(buf[:]); err != nil || n != 8 || buf[0] != 1 {
		t.Fatalf("read = %d, %v, %v; want the 1 written", n, err, buf)
	}
	if _, err := e.Read(buf[:]); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("second read: %v, want EAGAIN (still non-blocking)", err)
	}
	polled := polledFds(t)
	if !polled[int(wrapped.Fd())] {
		t.Fatalf("the os.File eventfd %d is not in any epoll set %v: the check cannot see registrations", wrapped.Fd(), polled)
	}
	if polled[rawFd] {
		t.Fatalf("eventFD's fd %d is registered with an epoll instance", rawFd)
	}
}

// TestEventFDCloseWaitsForControl: a Close while a ppoll runs under
// Control waits for it to return, and afterwards every call gets
// os.ErrClosed, so a closed (and perhaps reused) fd number is never used.
func TestEventFDCloseWaitsForControl(t *testing.T) {
	fd := newTestEventfd(t)
	// A second descriptor of the same eventfd, for the stop's spurious
	// kick: e's own calls wait behind the pending Close.
	dup, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dup)
	e := newEventFD(fd)
	inPoll := make(chan struct{})
	polled := make(chan error, 1)
	go func() {
		polled <- e.Control(func(fd uintptr) {
			close(inPoll)
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			_, _ = unix.Ppoll(p, nil, nil)
		})
	}()
	<-inPoll
	closed := make(chan error, 1)
	go func() { closed <- e.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a ppoll on the fd was in progress", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := unix.Write(dup, eventOne[:]); err != nil {
		t.Fatal(err)
	}
	if err := <-polled; err != nil {
		t.Fatalf("Control: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	var buf [8]byte
	if _, err := e.Write(eventOne[:]); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
	if _, err := e.Read(buf[:]); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v, want os.ErrClosed", err)
	}
	if err := e.Control(func(uintptr) { t.Error("Control ran after Close") }); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Control after Close: %v, want os.ErrClosed", err)
	}
	if err := e.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: %v, want os.ErrClosed", err)
	}
}

// TestEventFDWriteFullCounter: a signal to an eventfd whose counter is at
// its maximum is not an error; the reader has one pending either way.
func TestEventFDWriteFullCounter(t *testing.T) {
	e := newEventFD(newTestEventfd(t))
	defer e.Close()
	max := [8]byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if _, err := e.Write(max[:]); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Write(eventOne[:]); err != nil || n != 8 {
		t.Fatalf("write to a full counter = %d, %v; want 8, nil", n, err)
	}
}

// TestSessionEventFiles: the ppoll modes get their kick and call eventfds
// outside the runtime poller, the others through it.
func TestSessionEventFiles(t *testing.T) {
	for _, tc := range []struct {
		mode KickWait
		raw  bool
	}{
		{"", false}, {KickWaitPoller, false}, {KickWaitInline, false},
		{KickWaitPpoll, true}, {KickWaitInlinePpoll, true},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			s := &session{opts: Options{KickWait: tc.mode}}
			if f := s.eventFile(-1, "kick"); f != nil {
				t.Fatalf("no fd: got %T, want nil", f)
			}
			f := s.eventFile(newTestEventfd(t), "kick")
			defer f.Close()
			if _, raw := f.(*eventFD); raw != tc.raw {
				t.Fatalf("got %T; outside the poller: %v, want %v", f, raw, tc.raw)
			}
		})
	}
}
