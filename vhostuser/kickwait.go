package vhostuser

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// KickWait selects how a queue's leader sleeps until the next kick
// (Options.KickWait).
type KickWait string

const (
	// KickWaitPoller (the default; also "") reads the kick eventfd
	// through the Go runtime's poller: the read fails with EAGAIN, the
	// goroutine parks, the netpoller's epoll_pwait sees the kick and a
	// thread is woken to run the goroutine. The idle bound is a read
	// deadline; a stop sets a past one.
	KickWaitPoller KickWait = "poller"
	// KickWaitPpoll makes the leader block in ppoll(2) on the kick
	// eventfd itself, as the C virtiofsd does, with the idle bound as the
	// ppoll timeout: the thread the kernel wakes is the one that pops and
	// serves the chain, with no netpoller in between. The goroutine
	// enters the system call like any blocking one (the runtime may hand
	// its P to other work meanwhile). The kick and call eventfds stay
	// outside the runtime poller (eventFD): registered there, each kick,
	// each read of it and each signal woke the netpoller's thread for
	// nothing. A stop writes the kick eventfd once (a spurious kick) so
	// the leader returns at once; the ppoll runs inside eventFD.Control,
	// under a read lock, so closing the kick fd waits for the leader to
	// leave the system call and its fd number is never reused under it.
	KickWaitPpoll KickWait = "ppoll"
)

// ppollWaiter is the leader's state for KickWaitPpoll, reused wait after
// wait so that waiting allocates nothing.
type ppollWaiter struct {
	fds      [1]unix.PollFd
	timeout  unix.Timespec
	left     unix.Timespec // ppoll's copy of timeout
	bounded  bool
	buf      [8]byte
	timedOut bool
	err      error
	wait     func(fd uintptr) // w.waitFd, bound once
}

func newPpollWaiter(idle time.Duration) *ppollWaiter {
	w := &ppollWaiter{bounded: idle > 0}
	if w.bounded {
		w.timeout = unix.NsecToTimespec(int64(idle))
	}
	w.wait = w.waitFd
	return w
}

// waitFd blocks in ppoll on fd until a kick or the timeout, and consumes
// the kick. EINTR and EAGAIN (another reader was first) count as a
// spurious wake-up: the caller looks at the ring and waits again.
func (w *ppollWaiter) waitFd(fd uintptr) {
	w.timedOut, w.err = false, nil
	w.fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	// The kernel writes the time left back into the timeout: pass a copy.
	var ts *unix.Timespec
	if w.bounded {
		w.left = w.timeout
		ts = &w.left
	}
	n, err := unix.Ppoll(w.fds[:], ts, nil)
	switch {
	case errors.Is(err, unix.EINTR):
		return
	case err != nil:
		w.err = err
		return
	case n == 0:
		w.timedOut = true
		return
	}
	if _, err := unix.Read(int(fd), w.buf[:]); err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
		w.err = err
	}
}

const (
	// KickWaitInline waits through the runtime poller as KickWaitPoller,
	// but the leader serves the chain it popped itself and keeps the lead
	// (inline.go): no goroutine is woken to take over the lead while it
	// serves, unless the queue has a backlog or the request is slow.
	KickWaitInline KickWait = "inline"
	// KickWaitInlinePpoll is KickWaitInline with the leader blocking in
	// ppoll(2) as KickWaitPpoll.
	KickWaitInlinePpoll KickWait = "inline-ppoll"
)
