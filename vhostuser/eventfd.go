package vhostuser

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// kickFile is what a queue needs of its kick eventfd: an *os.File read
// through the runtime poller (KickWaitPoller, KickWaitInline), or an
// *eventFD waited on with ppoll(2) (the ppoll modes).
type kickFile interface {
	io.ReadWriteCloser
	SetReadDeadline(t time.Time) error
	SyscallConn() (syscall.RawConn, error)
}

// eventFD is an eventfd the frontend shares with us (a queue's kick or
// call) used with plain system calls, outside the Go runtime's poller.
//
// Why not an *os.File: os.NewFile registers a non-blocking fd with the
// runtime's epoll, edge-triggered for input and output, and an eventfd
// becomes readable at every write and writable at every read. So every
// kick and every signal woke the thread sleeping in the netpoller, which
// found nothing to do: two spurious wake-ups per request each
// (docs/benchmarks.md, issue 15). Clearing O_NONBLOCK before wrapping is
// no way out: the file description is the frontend's too, and QEMU reads
// its eventfds expecting them non-blocking.
//
// Each call holds a read lock around its system call and Close takes the
// write lock, so a descriptor number is never used after it was closed
// (and perhaps reused for something else); a Close waits for a ppoll in
// progress to return (the stop's spurious kick makes that prompt).
type eventFD struct {
	mu sync.RWMutex
	fd int // -1 once closed
}

// newEventFD takes ownership of fd.
func newEventFD(fd int) *eventFD { return &eventFD{fd: fd} }

// Read reads the eventfd's counter (non-blocking, as the frontend made
// it: EAGAIN when nothing was written).
func (e *eventFD) Read(p []byte) (int, error) { return e.do(unix.Read, p) }

// Write adds to the eventfd's counter. EAGAIN (the counter is at its
// maximum) is success: the reader has a signal pending either way.
func (e *eventFD) Write(p []byte) (int, error) {
	n, err := e.do(unix.Write, p)
	if err == unix.EAGAIN {
		return len(p), nil
	}
	return n, err
}

// do runs op on the descriptor under the read lock, again after EINTR.
func (e *eventFD) do(op func(fd int, p []byte) (int, error), p []byte) (int, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.fd < 0 {
		return 0, os.ErrClosed
	}
	for {
		n, err := op(e.fd, p)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// Close closes the eventfd once no call is using it.
func (e *eventFD) Close() error {
	e.mu.Lock()
	fd := e.fd
	e.fd = -1
	e.mu.Unlock()
	if fd < 0 {
		return os.ErrClosed
	}
	return unix.Close(fd)
}

// errNoDeadline: an eventFD is never read through the runtime poller.
var errNoDeadline = errors.New("eventfd outside the runtime poller: no deadlines")

// SetReadDeadline is not supported; the ppoll modes bound their waits
// with ppoll's timeout.
func (e *eventFD) SetReadDeadline(time.Time) error { return errNoDeadline }

// SyscallConn returns a RawConn whose Control runs a function on the
// descriptor under the read lock.
func (e *eventFD) SyscallConn() (syscall.RawConn, error) { return rawConn{e}, nil }

// Control runs f with the descriptor, which stays open until f returns.
func (e *eventFD) Control(f func(fd uintptr)) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.fd < 0 {
		return os.ErrClosed
	}
	f(uintptr(e.fd))
	return nil
}

// errNoRawIO: RawConn's Read and Write wait through the runtime poller.
var errNoRawIO = errors.New("eventfd outside the runtime poller: use Control")

// rawConn adapts an eventFD to syscall.RawConn: Control only.
type rawConn struct{ e *eventFD }

func (c rawConn) Control(f func(fd uintptr)) error  { return c.e.Control(f) }
func (c rawConn) Read(func(fd uintptr) bool) error  { return errNoRawIO }
func (c rawConn) Write(func(fd uintptr) bool) error { return errNoRawIO }
