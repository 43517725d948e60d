package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

type nopDevice struct{}

func (nopDevice) NumQueues() int   { return 3 }
func (nopDevice) Features() uint64 { return 0 }
func (nopDevice) HandleChain(context.Context, int, *virtqueue.Chain) uint32 {
	return 0
}

func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// sessionState is what a message can change in a session, for comparing
// before and after a rejected one.
type sessionState struct {
	features, protocol uint64
	protoSet, backend  bool
	regions            int
	rings              []ringState
}

type ringState struct {
	size, base                        uint16
	addr                              VringAddr
	addrSet, enabled, kick, call, run bool
}

func (s *session) state() sessionState {
	st := sessionState{features: s.features, protocol: s.protocol, protoSet: s.protoSet, backend: s.backendReq != nil, regions: s.mem.NumRegions()}
	for _, v := range s.vrings {
		st.rings = append(st.rings, ringState{size: v.size, base: v.base, addr: v.addr, addrSet: v.addrSet, enabled: v.enabled,
			kick: v.kick != nil, call: v.call.Load() != nil, run: v.run != nil})
	}
	return st
}

// FuzzSession feeds arbitrary bytes to a session as if a frontend had sent
// them. Invariants: every message is decoded and handled without panic, and
// the whole conversation, teardown included, ends within a bound; a
// message rejected as malformed (which ends the session) or failing its own
// validation leaves the session's state as it was; every reply is a
// well-formed reply (REPLY flag, no fds) to a request that was sent, 8
// bytes long as every vhost-user reply this backend sends is.
func FuzzSession(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		front, back := socketPair(t)
		defer front.Close()
		go func() {
			front.Write(data)
			front.CloseWrite()
		}()
		sent := make(chan uint32, 1024) // requests dispatched, in order
		replies := make(chan error, 1)
		go func() { replies <- checkReplies(front, sent) }()

		log := logrus.New()
		log.SetOutput(io.Discard)
		opts := Options{Logger: logrus.NewEntry(log), StopTimeout: 100 * time.Millisecond}.withDefaults(nopDevice{})
		s := newSession(context.Background(), context.Background(), NewConn(back), nopDevice{}, opts)
		done := make(chan error, 1)
		go func() {
			done <- converse(s, sent)
			s.teardown(true)
			back.Close()
			close(sent)
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("session did not end within 20s")
		}
		if err := <-replies; err != nil {
			t.Fatal(err)
		}
	})
}

// converse is session.run with the state checks.
func converse(s *session, sent chan<- uint32) error {
	for {
		m, err := s.conn.Recv()
		if err != nil {
			return nil // EOF or an undecodable message: the session ends
		}
		before := s.state()
		req := m.Request
		select {
		case sent <- req:
		default:
			return nil // enough for one input
		}
		err = s.dispatch(&m)
		var op *opError
		switch {
		case err == nil:
		case errors.As(err, &op):
			if validationOnly(req) && !reflect.DeepEqual(before, s.state()) {
				return fmt.Errorf("%s failed (%v) but changed the session: %+v -> %+v", RequestName(req), err, before, s.state())
			}
		default:
			if errors.Is(err, ErrMalformed) && !reflect.DeepEqual(before, s.state()) {
				return fmt.Errorf("malformed %s (%v) changed the session: %+v -> %+v", RequestName(req), err, before, s.state())
			}
			return nil
		}
	}
}

// validationOnly are the requests whose failures come from checking the
// request alone, before anything is changed (others may fail after a
// change the frontend asked for, such as a kick fd stored for a ring that
// then cannot start).
func validationOnly(req uint32) bool {
	switch req {
	case ReqSetFeatures, ReqSetProtocolFeatures, ReqSetVringNum, ReqSetVringBase, ReqSetVringAddr:
		return true
	}
	return false
}

// checkReplies reads the backend's replies until EOF and checks each
// against the requests dispatched so far.
func checkReplies(front *net.UnixConn, sent <-chan uint32) error {
	defer io.Copy(io.Discard, front)
	c := NewConn(front)
	for {
		m, err := c.Recv()
		if err != nil {
			return nil
		}
		m.CloseFds()
		if m.Flags&FlagReply == 0 || m.Flags&versionMask != FlagVersion {
			return fmt.Errorf("reply to %s with flags %#x", RequestName(m.Request), m.Flags)
		}
		if m.Size != 8 || len(m.Payload) != 8 {
			return fmt.Errorf("reply to %s of %d bytes", RequestName(m.Request), m.Size)
		}
		for {
			req, ok := <-sent
			if !ok {
				return fmt.Errorf("reply to %s that was not asked for", RequestName(m.Request))
			}
			if req == m.Request {
				break
			}
		}
	}
}

func TestParseHeaderLimits(t *testing.T) {
	b := make([]byte, HeaderSize)
	PutHeader(b, Header{Request: ReqGetFeatures, Flags: FlagVersion, Size: MaxPayload + 1})
	if _, err := ParseHeader(b); err == nil {
		t.Error("oversized payload accepted")
	}
	if _, err := ParseHeader(b[:11]); err == nil {
		t.Error("short header accepted")
	}
	PutHeader(b, Header{Request: ReqSetVringAddr, Flags: FlagVersion | FlagNeedReply, Size: VringAddrSize})
	h, err := ParseHeader(b)
	if err != nil || h.Request != ReqSetVringAddr || !h.NeedReply() || h.Size != VringAddrSize {
		t.Errorf("round trip: %+v %v", h, err)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	a := VringAddr{Index: 1, Flags: 0, Desc: 0x7f0000001000, Used: 0x7f0000003000, Avail: 0x7f0000002000, Log: 9}
	if got, err := ParseVringAddr(AppendVringAddr(nil, a)); err != nil || got != a {
		t.Errorf("vring addr: %+v %v", got, err)
	}
	rs := []MemRegion{{0, 1 << 30, 0x7f44_0000_0000, 0}, {1 << 32, 1 << 30, 0x7f45_0000_0000, 4096}}
	got, err := ParseMemTable(AppendMemTable(nil, rs))
	if err != nil || len(got) != 2 || got[1] != rs[1] {
		t.Errorf("mem table: %+v %v", got, err)
	}
	if r, err := ParseSingleRegion(ReqAddMemReg, AppendSingleRegion(nil, rs[1])); err != nil || r != rs[1] {
		t.Errorf("single region: %+v %v", r, err)
	}
	if _, err := ParseMemTable(AppendMemTable(nil, rs)[:40]); err == nil {
		t.Error("truncated mem table accepted")
	}
}
