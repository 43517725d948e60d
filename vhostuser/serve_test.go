package vhostuser_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// echoDevice is a test device (not a stand-in for anything real): it
// answers every chain with the queue index followed by the request bytes.
// A request starting with 'S' blocks until release is closed (or the
// context ends); one starting with 'P' panics.
type echoDevice struct {
	queues  int
	release chan struct{}
	started chan struct{} // receives when a slow request begins
	served  atomic.Int64
	ends    atomic.Int64
	waits   atomic.Int64 // QueueWait calls
	waited  atomic.Int64 // their total, ns
}

// QueueWait makes echoDevice a vhostuser.QueueWaiter.
func (d *echoDevice) QueueWait(queue int, w time.Duration) {
	d.waits.Add(1)
	d.waited.Add(int64(w))
}

func newEchoDevice(queues int) *echoDevice {
	return &echoDevice{queues: queues, release: make(chan struct{}), started: make(chan struct{}, 64)}
}

func (d *echoDevice) NumQueues() int   { return d.queues }
func (d *echoDevice) Features() uint64 { return 0 }
func (d *echoDevice) StartSession()    {}
func (d *echoDevice) EndSession()      { d.ends.Add(1) }

func (d *echoDevice) HandleChain(ctx context.Context, queue int, c *virtqueue.Chain) uint32 {
	var first byte
	if len(c.Readable) > 0 && len(c.Readable[0]) > 0 {
		first = c.Readable[0][0]
	}
	switch first {
	case 'S':
		d.started <- struct{}{}
		select {
		case <-d.release:
		case <-ctx.Done():
			return 0
		}
	case 'I': // ignores its context
		d.started <- struct{}{}
		<-d.release
	case 'P':
		panic("test device asked to panic")
	case 'D': // answered a little later
		time.Sleep(40 * time.Millisecond)
	}
	d.served.Add(1)
	return echo(c, byte(queue))
}

// echo copies tag and the readable bytes into the writable buffers without
// allocating.
func echo(c *virtqueue.Chain, tag byte) uint32 {
	wi, wo := 0, 0
	n := uint32(0)
	put := func(src []byte) {
		for len(src) > 0 && wi < len(c.Writable) {
			k := copy(c.Writable[wi][wo:], src)
			src = src[k:]
			wo += k
			n += uint32(k)
			if wo == len(c.Writable[wi]) {
				wi, wo = wi+1, 0
			}
		}
	}
	put([]byte{tag})
	for _, r := range c.Readable {
		put(r)
	}
	return n
}

type server struct {
	path string
	dev  *echoDevice
	done chan error
	stop context.CancelFunc
}

func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// envKickWait names the environment variable that sets Options.KickWait
// for every test server that does not set it, so that the whole package
// runs in either mode (NVFS_KICK_WAIT=ppoll go test ./vhostuser).
const envKickWait = "NVFS_KICK_WAIT"

func startServer(t testing.TB, opts vhostuser.Options) *server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vfsd.sock")
	l, err := vhostuser.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if opts.RequestQueues == 0 {
		opts.RequestQueues = 2
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	if opts.KickWait == "" {
		opts.KickWait = vhostuser.KickWait(os.Getenv(envKickWait))
	}
	dev := newEchoDevice(1 + opts.RequestQueues)
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{path: path, dev: dev, done: make(chan error, 1), stop: cancel}
	go func() { s.done <- vhostuser.Serve(ctx, l, dev, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return s
}

func (s *server) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // keep it for Cleanup
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

func connect(t testing.TB, s *server, opts testdriver.Options) *testdriver.Driver {
	t.Helper()
	if opts.RequestQueues == 0 {
		opts.RequestQueues = 2
	}
	d, err := testdriver.Connect(s.path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func wantEcho(t *testing.T, d *testdriver.Driver, queue int, req []byte, layout testdriver.Layout) {
	t.Helper()
	got, err := d.Submit(queue, [][]byte{req}, []int{len(req) + 1}, layout)
	if err != nil {
		t.Fatalf("queue %d: %v", queue, err)
	}
	want := append([]byte{byte(queue)}, req...)
	if !bytes.Equal(got, want) {
		t.Fatalf("queue %d: got %q, want %q", queue, got, want)
	}
}

func TestSequencesNegotiateAndServe(t *testing.T) {
	layouts := []struct {
		name string
		l    testdriver.Layout
	}{
		{"plain", testdriver.Layout{}},
		{"1-byte descriptors", testdriver.Layout{SegmentSize: 1}},
		{"indirect", testdriver.Layout{Indirect: true}},
		{"indirect 7-byte", testdriver.Layout{Indirect: true, SegmentSize: 7}},
	}
	for _, seq := range []testdriver.Sequence{testdriver.QEMU, testdriver.CloudHypervisor} {
		for _, noEvIdx := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/noEventIdx=%v", seq, noEvIdx), func(t *testing.T) {
				s := startServer(t, vhostuser.Options{})
				d := connect(t, s, testdriver.Options{Sequence: seq, NoEventIdx: noEvIdx, QueueSize: 64,
					MemRegions: []uint64{1 << 20, 1 << 20}})
				if d.QueueNum != 3 {
					t.Errorf("GET_QUEUE_NUM %d, want 3", d.QueueNum)
				}
				wantProto := uint64(vhostuser.ProtocolMQ | vhostuser.ProtocolReplyAck | vhostuser.ProtocolConfigureMemSlots)
				if d.Protocol() != wantProto {
					t.Errorf("protocol features %#x, want %#x", d.Protocol(), wantProto)
				}
				if f := d.Features(); f&vhostuser.FeatureRingEventIdx != 0 == noEvIdx || f&vhostuser.FeatureVersion1 == 0 {
					t.Errorf("features %#x", f)
				}
				for _, l := range layouts {
					msg := bytes.Repeat([]byte("0123456789abcdef"), 20)
					if l.l.SegmentSize > 0 && l.l.SegmentSize < 16 {
						msg = msg[:25] // 51 descriptors: fits the 64-entry queue
					}
					for q := 0; q < d.NumQueues(); q++ {
						wantEcho(t, d, q, msg, l.l)
					}
				}
			})
		}
	}
}

func TestBuffersStraddlingRegions(t *testing.T) {
	s := startServer(t, vhostuser.Options{})
	d := connect(t, s, testdriver.Options{Sequence: testdriver.QEMU, MemRegions: []uint64{1 << 20, 1 << 20}})
	// Fill the first region's heap so the next buffer crosses into the second.
	boundary := d.RegionStart(1)
	var held []uint64
	for {
		gpa, err := d.Alloc(4096)
		if err != nil {
			t.Fatal(err)
		}
		if gpa+8192 > boundary {
			d.Free(gpa, 4096)
			break
		}
		held = append(held, gpa)
	}
	msg := bytes.Repeat([]byte{'x'}, 8000)
	wantEcho(t, d, 1, msg, testdriver.Layout{})
	for _, g := range held {
		d.Free(g, 4096)
	}
}

func TestManyInFlightAcrossQueues(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 4})
	d := connect(t, s, testdriver.Options{Sequence: testdriver.CloudHypervisor, RequestQueues: 4, QueueSize: 32})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for q := 1; q <= 4; q++ {
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(q, g int) {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					req := []byte(fmt.Sprintf("q%d g%d i%d", q, g, i))
					got, err := d.Submit(q, [][]byte{req[:3], req[3:]}, []int{2, 64}, testdriver.Layout{})
					if err != nil {
						errs <- err
						return
					}
					if want := append([]byte{byte(q)}, req...); !bytes.Equal(got, want) {
						errs <- fmt.Errorf("got %q want %q", got, want)
						return
					}
				}
			}(q, g)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestQueueWaitReported: a device that takes queue waits gets one per
// chain it serves, before serving it, and they are not all zero (each
// chain here follows a kick).
func TestQueueWaitReported(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1})
	d := connect(t, s, testdriver.Options{RequestQueues: 1, QueueSize: 16})
	for i := 0; i < 40; i++ {
		wantEcho(t, d, 1, []byte(fmt.Sprintf("waited %d", i)), testdriver.Layout{})
	}
	if got, served := s.dev.waits.Load(), s.dev.served.Load(); got != served || got < 40 {
		t.Fatalf("%d queue waits reported for %d chains served, want one each (>= 40)", got, served)
	}
	if s.dev.waited.Load() <= 0 {
		t.Fatal("every queue wait was 0")
	}
}

func TestInlineWorkers(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1, Workers: -1})
	d := connect(t, s, testdriver.Options{RequestQueues: 1, QueueSize: 16})
	for i := 0; i < 40; i++ {
		wantEcho(t, d, 1, []byte(fmt.Sprintf("inline %d", i)), testdriver.Layout{})
	}
}

func TestSlowRequestDoesNotBlockQueue(t *testing.T) {
	const workers = 4
	s := startServer(t, vhostuser.Options{RequestQueues: 1, Workers: workers})
	d := connect(t, s, testdriver.Options{RequestQueues: 1})
	// workers-1 slow requests leave one goroutine to serve the others.
	var slow []*testdriver.Pending
	for i := 0; i < workers-1; i++ {
		p, err := d.Start(1, [][]byte{[]byte(fmt.Sprintf("Slow %d", i))}, []int{16}, testdriver.Layout{})
		if err != nil {
			t.Fatal(err)
		}
		<-s.dev.started
		slow = append(slow, p)
	}
	for i := 0; i < 20; i++ {
		wantEcho(t, d, 1, []byte(fmt.Sprintf("fast %d", i)), testdriver.Layout{})
	}
	// One more slow request takes the last goroutine: the next request
	// waits in the ring until one is free again, and is served then.
	p, err := d.Start(1, [][]byte{[]byte(fmt.Sprintf("Slow %d", workers-1))}, []int{16}, testdriver.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	<-s.dev.started
	slow = append(slow, p)
	queued, err := d.Start(1, [][]byte{[]byte("queued")}, []int{16}, testdriver.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-queued.Done():
		t.Fatal("a request was served while every goroutine was busy")
	case <-time.After(50 * time.Millisecond):
	}
	for _, p := range slow {
		select {
		case <-p.Done():
			t.Fatal("slow request completed before release")
		default:
		}
	}
	close(s.dev.release)
	for i, p := range slow {
		got, err := p.Wait()
		if want := fmt.Sprintf("\x01Slow %d", i); err != nil || string(got) != want {
			t.Fatalf("slow request: %q %v, want %q", got, err, want)
		}
	}
	if got, err := queued.Wait(); err != nil || string(got) != "\x01queued" {
		t.Fatalf("queued request: %q %v", got, err)
	}
}

func TestHostileChains(t *testing.T) {
	const qsize = 16
	for _, seq := range []testdriver.Sequence{testdriver.QEMU, testdriver.CloudHypervisor} {
		t.Run(seq.String(), func(t *testing.T) {
			s := startServer(t, vhostuser.Options{RequestQueues: 1})
			d := connect(t, s, testdriver.Options{Sequence: seq, RequestQueues: 1, QueueSize: qsize, MemRegions: []uint64{1 << 20}})
			buf, err := d.Alloc(4096)
			if err != nil {
				t.Fatal(err)
			}
			d.WriteGuest(buf, []byte("hostile"))
			table := func(descs ...testdriver.Desc) uint64 {
				b := make([]byte, 16*len(descs))
				for i, ds := range descs {
					testdriver.PutDesc(b, i, ds)
				}
				gpa, err := d.Alloc(len(b))
				if err != nil {
					t.Fatal(err)
				}
				d.WriteGuest(gpa, b)
				return gpa
			}
			long := make([]testdriver.Desc, qsize+1)
			for i := range long {
				long[i] = testdriver.Desc{Addr: buf, Len: 1, Flags: testdriver.FlagNext, Next: uint16(i + 1)}
			}
			long[qsize].Flags = 0
			end := d.RAMEnd()
			cases := []struct {
				name  string
				descs []testdriver.Desc
			}{
				{"outside memory", []testdriver.Desc{{Addr: end, Len: 16}}},
				{"far outside memory", []testdriver.Desc{{Addr: 1 << 60, Len: 16, Flags: testdriver.FlagWrite}}},
				{"runs past the end", []testdriver.Desc{{Addr: end - 8, Len: 16}}},
				{"addr+len overflows", []testdriver.Desc{{Addr: ^uint64(0) - 8, Len: 64}}},
				{"self loop", []testdriver.Desc{{Addr: buf, Len: 4, Flags: testdriver.FlagNext, Next: 0}}},
				{"two-step loop", []testdriver.Desc{
					{Addr: buf, Len: 4, Flags: testdriver.FlagNext, Next: 1},
					{Addr: buf, Len: 4, Flags: testdriver.FlagNext, Next: 0}}},
				{"next out of range", []testdriver.Desc{{Addr: buf, Len: 4, Flags: testdriver.FlagNext, Next: 0xffff}}},
				{"readable after writable", []testdriver.Desc{
					{Addr: buf, Len: 4, Flags: testdriver.FlagWrite | testdriver.FlagNext, Next: 1},
					{Addr: buf, Len: 4}}},
				{"indirect chain longer than the queue", []testdriver.Desc{{Addr: table(long...), Len: 16 * (qsize + 1), Flags: testdriver.FlagIndirect}}},
				{"indirect loop", []testdriver.Desc{{Addr: table(
					testdriver.Desc{Addr: buf, Len: 1, Flags: testdriver.FlagNext, Next: 1},
					testdriver.Desc{Addr: buf, Len: 1, Flags: testdriver.FlagNext, Next: 0}), Len: 32, Flags: testdriver.FlagIndirect}}},
				{"indirect length not a multiple of 16", []testdriver.Desc{{Addr: table(testdriver.Desc{Addr: buf, Len: 1}), Len: 17, Flags: testdriver.FlagIndirect}}},
				{"indirect length zero", []testdriver.Desc{{Addr: buf, Len: 0, Flags: testdriver.FlagIndirect}}},
				{"indirect table outside memory", []testdriver.Desc{{Addr: end, Len: 32, Flags: testdriver.FlagIndirect}}},
				{"indirect with NEXT", []testdriver.Desc{
					{Addr: table(testdriver.Desc{Addr: buf, Len: 1}), Len: 16, Flags: testdriver.FlagIndirect | testdriver.FlagNext, Next: 1},
					{Addr: buf, Len: 1}}},
				{"nested indirect", []testdriver.Desc{{Addr: table(testdriver.Desc{Addr: buf, Len: 16, Flags: testdriver.FlagIndirect}), Len: 16, Flags: testdriver.FlagIndirect}}},
				{"indirect entry outside memory", []testdriver.Desc{{Addr: table(testdriver.Desc{Addr: end + 4096, Len: 1, Flags: testdriver.FlagWrite}), Len: 16, Flags: testdriver.FlagIndirect}}},
				{"indirect next out of range", []testdriver.Desc{{Addr: table(testdriver.Desc{Addr: buf, Len: 1, Flags: testdriver.FlagNext, Next: 5}), Len: 16, Flags: testdriver.FlagIndirect}}},
			}
			for _, tc := range cases {
				p, err := d.StartRaw(1, tc.descs)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if _, err := p.Wait(); err != nil {
					t.Fatalf("%s: no used entry: %v", tc.name, err)
				}
				if n := p.Len(); n != 0 {
					t.Errorf("%s: used length %d, want 0", tc.name, n)
				}
				wantEcho(t, d, 1, []byte("after "+tc.name), testdriver.Layout{})
			}
			// A head index past the queue: nothing to give back, nothing
			// breaks.
			if err := d.PublishHead(1, qsize+3); err != nil {
				t.Fatal(err)
			}
			wantEcho(t, d, 1, []byte("after a bad head"), testdriver.Layout{})
			// A device panic is answered with 0 bytes.
			if got, err := d.Submit(1, [][]byte{[]byte("Panic")}, []int{8}, testdriver.Layout{}); err != nil || len(got) != 0 {
				t.Errorf("panicking request: %q %v", got, err)
			}
			wantEcho(t, d, 1, []byte("after a panic"), testdriver.Layout{})
			if n := d.UnexpectedUsed(1); n != 0 {
				t.Errorf("%d unexpected used entries", n)
			}
		})
	}
}

func TestGetVringBaseStopsAndReplies(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1})
	d := connect(t, s, testdriver.Options{Sequence: testdriver.QEMU, RequestQueues: 1, QueueSize: 8})
	for i := 0; i < 13; i++ { // wraps the 8-entry ring
		wantEcho(t, d, 1, []byte("x"), testdriver.Layout{})
	}
	// A slow request in flight: GET_VRING_BASE waits for it.
	slow, err := d.Start(1, [][]byte{[]byte("Slow")}, []int{8}, testdriver.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	<-s.dev.started
	type res struct {
		base uint16
		err  error
	}
	got := make(chan res, 1)
	go func() {
		b, err := d.StopQueue(1)
		got <- res{b, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("GET_VRING_BASE answered (%d, %v) with a request in flight", r.base, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	close(s.dev.release)
	r := <-got
	if r.err != nil || r.base != 14 {
		t.Fatalf("GET_VRING_BASE = %d, %v; want 14", r.base, r.err)
	}
	if _, err := slow.Wait(); err != nil {
		t.Fatal(err)
	}
	// Stopped: a new request is not served...
	p, err := d.Start(1, [][]byte{[]byte("while stopped")}, []int{32}, testdriver.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		t.Fatal("request served on a stopped ring")
	case <-time.After(100 * time.Millisecond):
	}
	// ...until the ring is restarted where it stopped.
	if err := d.StartQueue(1, r.base); err != nil {
		t.Fatal(err)
	}
	if b, err := p.Wait(); err != nil || string(b) != "\x01while stopped" {
		t.Fatalf("after restart: %q %v", b, err)
	}
	// Hiprio was never used.
	if b, err := d.StopQueue(0); err != nil || b != 0 {
		t.Fatalf("hiprio base %d %v", b, err)
	}
}

func TestCancelShutsDownPromptly(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1})
	d := connect(t, s, testdriver.Options{RequestQueues: 1})
	if _, err := d.Start(1, [][]byte{[]byte("Stuck")}, []int{8}, testdriver.Layout{}); err != nil {
		t.Fatal(err)
	}
	<-s.dev.started
	start := time.Now()
	s.stop()
	if err := s.wait(t); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Serve took %v to return", el)
	}
	if _, err := d.GetVringBase(1); err == nil {
		t.Fatal("session still answering after shutdown")
	}
}

// Even a device that ignores cancellation, holding up GET_VRING_BASE,
// cannot keep Serve from returning.
func TestCancelDuringGetVringBaseWithStuckDevice(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1})
	d := connect(t, s, testdriver.Options{RequestQueues: 1})
	defer close(s.dev.release)
	if _, err := d.Start(1, [][]byte{[]byte("Ignore")}, []int{8}, testdriver.Layout{}); err != nil {
		t.Fatal(err)
	}
	<-s.dev.started
	go d.GetVringBase(1)
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	s.stop()
	if err := s.wait(t); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Serve took %v to return", el)
	}
	if n := s.dev.ends.Load(); n != 0 {
		t.Errorf("EndSession called with a request still in the device")
	}
}

func TestDisconnectEndsServe(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1})
	d := connect(t, s, testdriver.Options{RequestQueues: 1})
	wantEcho(t, d, 1, []byte("hello"), testdriver.Layout{})
	d.Close()
	if err := s.wait(t); err != nil {
		t.Fatalf("Serve after disconnect: %v", err)
	}
	if s.dev.ends.Load() != 1 {
		t.Errorf("EndSession called %d times", s.dev.ends.Load())
	}
}

func TestKeepListeningAcceptsNextFrontend(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1, KeepListening: true})
	for i, seq := range []testdriver.Sequence{testdriver.QEMU, testdriver.CloudHypervisor, testdriver.QEMU} {
		d := connect(t, s, testdriver.Options{Sequence: seq, RequestQueues: 1})
		wantEcho(t, d, 1, []byte(fmt.Sprintf("frontend %d", i)), testdriver.Layout{})
		d.Close()
	}
	// Reconnect with the same rings, resuming where they were.
	d := connect(t, s, testdriver.Options{RequestQueues: 1})
	wantEcho(t, d, 1, []byte("before"), testdriver.Layout{})
	if err := d.Reconnect(); err != nil {
		t.Fatal(err)
	}
	wantEcho(t, d, 1, []byte("after reconnect"), testdriver.Layout{})
	select {
	case err := <-s.done:
		t.Fatalf("Serve returned with KeepListening: %v", err)
	default:
	}
}

func TestReplyAckOnEveryMessage(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1})
	d := connect(t, s, testdriver.Options{Sequence: testdriver.CloudHypervisor, RequestQueues: 1})
	ack := func(req uint32, payload []byte) uint64 {
		t.Helper()
		if err := d.SendRaw(req, vhostuser.FlagVersion|vhostuser.FlagNeedReply, payload, nil); err != nil {
			t.Fatal(err)
		}
		m, err := d.Recv()
		if err != nil {
			t.Fatalf("%s: %v", vhostuser.RequestName(req), err)
		}
		v, err := vhostuser.ParseU64(req, m.Payload)
		if err != nil || m.Request != req || m.Flags != vhostuser.FlagVersion|vhostuser.FlagReply {
			t.Fatalf("%s: reply %+v %v", vhostuser.RequestName(req), m.Header, err)
		}
		return v
	}
	state := func(idx, num uint32) []byte {
		return vhostuser.AppendVringState(nil, vhostuser.VringState{Index: idx, Num: num})
	}
	if v := ack(vhostuser.ReqSetOwner, nil); v != 0 {
		t.Errorf("SET_OWNER status %d", v)
	}
	if v := ack(vhostuser.ReqSetVringEnable, state(0, 1)); v != 0 {
		t.Errorf("SET_VRING_ENABLE status %d", v)
	}
	if v := ack(vhostuser.ReqSetVringCall, vhostuser.AppendU64(nil, 0|vhostuser.VringFdNoFd)); v != 0 {
		t.Errorf("SET_VRING_CALL no-fd status %d", v)
	}
	// Failures are reported, and the session goes on.
	if v := ack(vhostuser.ReqSetVringNum, state(1, 3)); v == 0 {
		t.Error("SET_VRING_NUM 3 accepted")
	}
	if v := ack(vhostuser.ReqSetFeatures, vhostuser.AppendU64(nil, 1<<60)); v == 0 {
		t.Error("SET_FEATURES with an unoffered bit accepted")
	}
	if v := ack(vhostuser.ReqRemMemReg, vhostuser.AppendSingleRegion(nil, vhostuser.MemRegion{GuestPhys: 1 << 40, Size: 4096})); v == 0 {
		t.Error("REM_MEM_REG of an unknown region accepted")
	}
	if v := ack(vhostuser.ReqSetFeatures, vhostuser.AppendU64(nil, d.Features())); v != 0 {
		t.Errorf("SET_FEATURES status %d", v)
	}
	wantEcho(t, d, 1, []byte("still serving"), testdriver.Layout{})
}

func TestBadMessagesCloseTheSession(t *testing.T) {
	const nf = vhostuser.FlagVersion | vhostuser.FlagNeedReply
	tests := []struct {
		name    string
		req     uint32
		flags   uint32
		payload []byte
	}{
		{"unknown request", 99, nf, nil},
		{"unsupported GET_CONFIG", vhostuser.ReqGetConfig, nf, make([]byte, 12)},
		{"bad version", vhostuser.ReqGetFeatures, 0x2, nil},
		{"reply flag from the frontend", vhostuser.ReqSetOwner, vhostuser.FlagVersion | vhostuser.FlagReply, nil},
		{"short payload", vhostuser.ReqSetVringNum, nf, []byte{1, 0}},
		{"queue index out of range", vhostuser.ReqSetVringBase, nf, vhostuser.AppendVringState(nil, vhostuser.VringState{Index: 7})},
		{"kick without its fd", vhostuser.ReqSetVringKick, nf, vhostuser.AppendU64(nil, 1)},
		{"mem table without fds", vhostuser.ReqSetMemTable, nf, vhostuser.AppendMemTable(nil, []vhostuser.MemRegion{{Size: 4096}})},
		{"mem table with 9 regions", vhostuser.ReqSetMemTable, nf, vhostuser.AppendMemTable(nil, make([]vhostuser.MemRegion, 9))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, vhostuser.Options{RequestQueues: 1})
			d := connect(t, s, testdriver.Options{Sequence: testdriver.CloudHypervisor, RequestQueues: 1})
			if err := d.SendRaw(tc.req, tc.flags, tc.payload, nil); err != nil {
				t.Fatal(err)
			}
			if m, err := d.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("want the session closed, got %+v %v", m.Header, err)
			}
			if err := s.wait(t); err == nil {
				t.Error("Serve returned nil after a bad message")
			}
		})
	}
	t.Run("oversized header", func(t *testing.T) {
		s := startServer(t, vhostuser.Options{})
		c, err := net.Dial("unix", s.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hdr := make([]byte, vhostuser.HeaderSize)
		vhostuser.PutHeader(hdr, vhostuser.Header{Request: 1, Flags: 1, Size: 1 << 30})
		c.Write(hdr)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("want EOF, got %v", err)
		}
	})
}

func TestMemoryHotplug(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1})
	d := connect(t, s, testdriver.Options{Sequence: testdriver.QEMU, RequestQueues: 1, MemRegions: []uint64{1 << 20, 1 << 20}})
	second := d.RegionStart(1) + 4096
	d.WriteGuest(second, []byte("in the second region"))
	read := func() uint32 {
		t.Helper()
		p, err := d.StartRaw(1, []testdriver.Desc{{Addr: second, Len: 20, Flags: testdriver.FlagNext, Next: 1}, {Addr: second + 64, Len: 64, Flags: testdriver.FlagWrite}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(); err != nil {
			t.Fatal(err)
		}
		return p.Len()
	}
	if n := read(); n != 21 {
		t.Fatalf("before removal: %d bytes", n)
	}
	if err := d.RemoveLastRegion(); err != nil {
		t.Fatal(err)
	}
	if n := read(); n != 0 {
		t.Fatalf("after removal: %d bytes, want a dropped chain", n)
	}
	if err := d.AddLastRegion(); err != nil {
		t.Fatal(err)
	}
	if n := read(); n != 21 {
		t.Fatalf("after re-adding: %d bytes", n)
	}
	if err := d.AddLastRegion(); err == nil {
		t.Fatal("overlapping ADD_MEM_REG accepted")
	}
	wantEcho(t, d, 1, []byte("still serving"), testdriver.Layout{})
}

// A region removed while a request still holds buffers in it stays mapped
// until the request completes.
func TestRemoveRegionUnderInFlightRequest(t *testing.T) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1})
	d := connect(t, s, testdriver.Options{Sequence: testdriver.QEMU, RequestQueues: 1, MemRegions: []uint64{1 << 20, 1 << 20}})
	buf := d.RegionStart(1) + 8192
	d.WriteGuest(buf, []byte("Slow"))
	p, err := d.StartRaw(1, []testdriver.Desc{{Addr: buf, Len: 4, Flags: testdriver.FlagNext, Next: 1}, {Addr: buf + 64, Len: 4096, Flags: testdriver.FlagWrite}})
	if err != nil {
		t.Fatal(err)
	}
	<-s.dev.started
	if err := d.RemoveLastRegion(); err != nil {
		t.Fatal(err)
	}
	close(s.dev.release) // the device now writes into the removed region
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := p.Len(); n != 5 {
		t.Fatalf("used length %d, want 5", n)
	}
	got := make([]byte, 5)
	d.ReadGuest(got, buf+64)
	if string(got) != "\x01Slow" {
		t.Fatalf("reply %q", got)
	}
	wantEcho(t, d, 1, []byte("still serving"), testdriver.Layout{})
}

func TestQueueSizes(t *testing.T) {
	for _, size := range []int{1024, 32768} {
		s := startServer(t, vhostuser.Options{RequestQueues: 1})
		d := connect(t, s, testdriver.Options{RequestQueues: 1, QueueSize: size, MemRegions: []uint64{4 << 20}})
		for i := 0; i < 3; i++ {
			wantEcho(t, d, 1, []byte("big queue"), testdriver.Layout{})
		}
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	// A stale socket from an earlier run is replaced.
	old, err := net.Listen("unix", "rel.sock")
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	l, err := vhostuser.Listen("rel.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(filepath.Join(dir, "rel.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	if err := os.WriteFile("file", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := vhostuser.Listen("file"); err == nil {
		t.Error("Listen replaced a regular file")
	}
	// An inherited listening fd.
	fl, err := vhostuser.ListenerFromFD(inheritFD(t, l))
	if err != nil {
		t.Fatal(err)
	}
	fl.Close()
	if _, err := vhostuser.ListenerFromFD(int(os.Stdin.Fd())); err == nil {
		t.Error("ListenerFromFD accepted stdin")
	}
}

// inheritFD returns a bare duplicate of l's fd, as a parent process would
// pass it: ListenerFromFD takes it over, so no *os.File may own it.
func inheritFD(t *testing.T, l *net.UnixListener) int {
	t.Helper()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestServeFromInheritedFD(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fd.sock")
	l0, err := vhostuser.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fd := inheritFD(t, l0)
	l0.SetUnlinkOnClose(false)
	l0.Close()
	l, err := vhostuser.ListenerFromFD(fd)
	if err != nil {
		t.Fatal(err)
	}
	dev := newEchoDevice(2)
	done := make(chan error, 1)
	go func() {
		done <- vhostuser.Serve(context.Background(), l, dev, vhostuser.Options{Logger: quietLogger()})
	}()
	d, err := testdriver.Connect(path, testdriver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Submit(1, [][]byte{[]byte("via fd")}, []int{16}, testdriver.Layout{})
	if err != nil || string(got) != "\x01via fd" {
		t.Fatalf("%q %v", got, err)
	}
	d.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A burst of chains published faster than the daemon wakes reaches it with
// one kick (the driver honours kick suppression): each must still start on
// a goroutine of its own while the ones before it are stuck in the device.
func TestBurstOfSlowRequestsEachStarts(t *testing.T) {
	const workers = 4
	s := startServer(t, vhostuser.Options{RequestQueues: 1, Workers: workers})
	d := connect(t, s, testdriver.Options{RequestQueues: 1})
	var slow []*testdriver.Pending
	for i := 0; i < workers; i++ {
		p, err := d.Start(1, [][]byte{[]byte(fmt.Sprintf("Slow %d", i))}, []int{16}, testdriver.Layout{})
		if err != nil {
			t.Fatal(err)
		}
		slow = append(slow, p)
	}
	for i := 0; i < workers; i++ {
		select {
		case <-s.dev.started:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d slow requests started", i, workers)
		}
	}
	close(s.dev.release)
	for i, p := range slow {
		if got, err := p.Wait(); err != nil || string(got) != fmt.Sprintf("\x01Slow %d", i) {
			t.Fatalf("slow request %d: %q %v", i, got, err)
		}
	}
}
