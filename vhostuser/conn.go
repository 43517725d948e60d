package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// Message is one decoded vhost-user message. Fds are owned by the receiver:
// whoever takes a Message must close or keep every fd in it.
type Message struct {
	Header
	Payload []byte
	Fds     []int
}

// CloseFds closes every fd still in m and forgets them.
func (m *Message) CloseFds() {
	for _, fd := range m.Fds {
		unix.Close(fd)
	}
	m.Fds = nil
}

// Conn carries vhost-user messages with SCM_RIGHTS fds over a unix stream
// socket. Both the backend (this package) and frontends (testdriver) use it.
// Recv and Send may run concurrently with each other but not with
// themselves; Send is additionally serialised so replies never interleave.
type Conn struct {
	c      *net.UnixConn
	sendMu sync.Mutex
	buf    [HeaderSize + MaxPayload]byte
	oob    []byte
}

// NewConn wraps a connected unix socket.
func NewConn(c *net.UnixConn) *Conn {
	return &Conn{c: c, oob: make([]byte, unix.CmsgSpace(MaxFds*4))}
}

// Close closes the socket.
func (c *Conn) Close() error { return c.c.Close() }

// readFull reads exactly len(b) bytes, collecting any fds that ride along.
func (c *Conn) readFull(b []byte, fds []int) ([]int, error) {
	got := 0
	for got < len(b) {
		n, oobn, flags, _, err := c.c.ReadMsgUnix(b[got:], c.oob)
		if oobn > 0 {
			more, perr := parseRights(c.oob[:oobn])
			fds = append(fds, more...)
			if perr != nil && err == nil {
				err = perr
			}
		}
		if err == nil && flags&unix.MSG_CTRUNC != 0 {
			err = fmt.Errorf("more than %d fds on one message: %w", MaxFds, ErrMalformed)
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
	fds, err := c.readFull(c.buf[:HeaderSize], nil)
	if err == nil {
		m.Header, err = ParseHeader(c.buf[:HeaderSize])
	}
	if err == nil {
		m.Payload = c.buf[HeaderSize : HeaderSize+int(m.Size)]
		fds, err = c.readFull(m.Payload, fds)
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
