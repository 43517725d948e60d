package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Message is one decoded vhost-user message. Fds are owned by the receiver:
// whoever takes a Message must close or keep every fd in it.
type Message struct {
	Header
	Payload []byte
	Fds     []int
	// FdsLost is set when the kernel could not install every fd the
	// sender attached (the process was out of fds: EMFILE); Fds holds the
	// ones that arrived.
	FdsLost bool
}

// CloseFds closes every fd still in m and forgets them.
func (m *Message) CloseFds() {
	for _, fd := range m.Fds {
		unix.Close(fd)
	}
	m.Fds = nil
}

// Conn carries vhost-user messages with SCM_RIGHTS fds over a unix stream
// socket. Both the device side (this package) and frontends (testdriver) use
// it.
// Recv and Send may run concurrently with each other but not with
// themselves; Send is additionally serialised so replies never interleave.
type Conn struct {
	c      *net.UnixConn
	rc     syscall.RawConn
	sendMu sync.Mutex
	buf    [HeaderSize + MaxPayload]byte
	oob    []byte
	// reserve holds fds kept open only to be given up for a moment while
	// a message is received, so that the fds it carries can be installed
	// even when everything else in the process has run out (a guest
	// holding every fd it can open).
	reserveMu   sync.Mutex
	reserve     []int
	reserveWant int
}

// NewConn wraps a connected unix socket.
func NewConn(c *net.UnixConn) *Conn {
	rc, _ := c.SyscallConn() // only fails for a nil or closed conn
	return &Conn{c: c, rc: rc, oob: make([]byte, unix.CmsgSpace(MaxFds*4))}
}

// KeepFdReserve makes Recv hold MaxFds spare fds and release them just
// for the receive system call (done once the socket is readable, so the
// window is a few microseconds): a message's fds then arrive even when the
// process has no other fd left. Receiving costs 2*MaxFds more system calls,
// which the control plane can afford.
func (c *Conn) KeepFdReserve() {
	c.reserveMu.Lock()
	c.reserveWant = MaxFds
	c.refillReserve()
	c.reserveMu.Unlock()
}

func (c *Conn) releaseReserve() {
	for _, fd := range c.reserve {
		unix.Close(fd)
	}
	c.reserve = c.reserve[:0]
}

func (c *Conn) refillReserve() {
	for len(c.reserve) < c.reserveWant {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			return // out of fds: try again after the next receive
		}
		c.reserve = append(c.reserve, fd)
	}
}

// Close closes the socket and the fd reserve.
func (c *Conn) Close() error {
	err := c.c.Close()
	c.reserveMu.Lock()
	c.releaseReserve()
	c.reserveWant = 0
	c.reserveMu.Unlock()
	return err
}

// recvmsg receives once, with the reserve released around the system call.
func (c *Conn) recvmsg(b []byte) (n, oobn, flags int, err error) {
	if c.rc == nil {
		return 0, 0, 0, net.ErrClosed
	}
	rerr := c.rc.Read(func(fd uintptr) bool {
		c.reserveMu.Lock()
		c.releaseReserve()
		for {
			n, oobn, flags, _, err = unix.Recvmsg(int(fd), b, c.oob, unix.MSG_CMSG_CLOEXEC)
			if err != unix.EINTR {
				break
			}
		}
		c.refillReserve()
		c.reserveMu.Unlock()
		return err != unix.EAGAIN
	})
	if rerr != nil {
		return 0, 0, 0, rerr
	}
	if err != nil {
		n = 0
	}
	return n, oobn, flags, err
}

// readFull reads exactly len(b) bytes, collecting any fds that ride along.
// Fds the kernel could not install set *lost.
func (c *Conn) readFull(b []byte, fds []int, lost *bool) ([]int, error) {
	got := 0
	for got < len(b) {
		n, oobn, flags, err := c.recvmsg(b[got:])
		var more []int
		if oobn > 0 {
			var perr error
			more, perr = parseRights(c.oob[:oobn])
			fds = append(fds, more...)
			if perr != nil && err == nil {
				err = perr
			}
		}
		if err == nil && flags&unix.MSG_CTRUNC != 0 {
			if len(more) >= MaxFds {
				err = fmt.Errorf("more than %d fds on one message: %w", MaxFds, ErrMalformed)
			} else {
				*lost = true // EMFILE: the rest of the message still follows
			}
		}
		got += n
		if err != nil {
			return fds, err
		}
		if n == 0 {
			if got == 0 {
				return fds, io.EOF
			}
			return fds, io.ErrUnexpectedEOF
		}
	}
	return fds, nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return fds, fmt.Errorf("SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// Recv reads one message. Its Payload aliases an internal buffer valid until
// the next Recv. On error every fd received is closed. io.EOF means the peer
// closed the connection cleanly between messages.
func (c *Conn) Recv() (Message, error) {
	var m Message
	fds, err := c.readFull(c.buf[:HeaderSize], nil, &m.FdsLost)
	if err == nil {
		m.Header, err = ParseHeader(c.buf[:HeaderSize])
	}
	if err == nil {
		m.Payload = c.buf[HeaderSize : HeaderSize+int(m.Size)]
		fds, err = c.readFull(m.Payload, fds, &m.FdsLost)
	}
	m.Fds = fds
	if err == nil && len(fds) > MaxFds {
		err = fmt.Errorf("%d fds on one message: %w", len(fds), ErrMalformed)
	}
	if err != nil {
		m.CloseFds()
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("truncated message: %w", err)
		}
		return Message{}, err
	}
	return m, nil
}

// Send writes one message with its fds in a single sendmsg.
func (c *Conn) Send(req, flags uint32, payload []byte, fds []int) error {
	if len(payload) > MaxPayload || len(fds) > MaxFds {
		return fmt.Errorf("send %s: message too large", RequestName(req))
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	var buf [HeaderSize + 320]byte
	b := buf[:HeaderSize]
	PutHeader(b, Header{Request: req, Flags: flags, Size: uint32(len(payload))})
	b = append(b, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := c.c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("send %s: %w", RequestName(req), err)
	}
	if n != len(b) {
		return fmt.Errorf("send %s: short write %d of %d", RequestName(req), n, len(b))
	}
	return nil
}
