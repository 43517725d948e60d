package vhostuser

import (
	"context"
	"io"
	"net"
	"os"
	"testing"

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

// FuzzSession feeds arbitrary bytes to a session as if a frontend had sent
// them: the decoder and every handler must return (an error or a reply),
// never panic or hang.
func FuzzSession(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		front, back := socketPair(t)
		defer front.Close()
		go func() {
			front.Write(data)
			front.CloseWrite()
			io.Copy(io.Discard, front)
		}()
		log := logrus.New()
		log.SetOutput(io.Discard)
		opts := Options{Logger: logrus.NewEntry(log)}.withDefaults(nopDevice{})
		s := newSession(context.Background(), context.Background(), NewConn(back), nopDevice{}, opts)
		_ = s.run()
		s.teardown(true)
		back.Close()
	})
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
