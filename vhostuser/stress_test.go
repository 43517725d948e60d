package vhostuser_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// stressDevice answers request-queue chains after a short random pause
// (so that completions of one queue come back out of order) and answers
// hiprio chains with nothing, as FORGET is answered: the chain still has
// to come back through the used ring.
type stressDevice struct{ queues int }

func (d *stressDevice) NumQueues() int   { return d.queues }
func (d *stressDevice) Features() uint64 { return 0 }

func (d *stressDevice) HandleChain(ctx context.Context, queue int, c *virtqueue.Chain) uint32 {
	if queue == 0 {
		return 0
	}
	switch rand.IntN(8) {
	case 0:
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
	case 1, 2:
		runtime.Gosched()
	}
	return echo(c, byte(queue))
}

// stressRun drives one daemon with submitters on every request queue and
// a flood of no-reply chains on hiprio, total requests per queue, and
// fails if any chain is not given back within the driver's timeout.
type stressRun struct {
	queueSize  int
	workers    int
	reqQueues  int
	perQueue   int // requests per request queue
	hiprio     int // no-reply chains on hiprio
	inFlight   int // submitters per queue
	noEventIdx bool
	startIndex uint16
	maskCalls  bool // swap call eventfds as QEMU does around MSI-X masking, all along
	kickWait   vhostuser.KickWait
}

func (sr stressRun) run(t *testing.T) {
	path := t.TempDir() + "/vfsd.sock"
	l, err := vhostuser.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	dev := &stressDevice{queues: 1 + sr.reqQueues}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// No idle check: a notification lost by the ring logic must show
		// as a request that never completes, not be recovered a second later.
		done <- vhostuser.Serve(ctx, l, dev, vhostuser.Options{RequestQueues: sr.reqQueues, Workers: sr.workers, Logger: quietLogger(), IdleCheck: -1, KickWait: sr.kickWait})
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	}()
	d, err := testdriver.Connect(path, testdriver.Options{
		RequestQueues: sr.reqQueues, QueueSize: sr.queueSize, NoEventIdx: sr.noEventIdx,
		StartIndex: sr.startIndex, Timeout: 10 * time.Second, MemRegions: []uint64{64 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := d.Features()&vhostuser.FeatureRingEventIdx != 0; got == sr.noEventIdx {
		t.Fatalf("EVENT_IDX negotiated %v, want %v", got, !sr.noEventIdx)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	submit := func(queue, n, id int) {
		defer wg.Done()
		req := make([]byte, 24)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint64(req, uint64(id))
			binary.LittleEndian.PutUint64(req[8:], uint64(i))
			layout := testdriver.Layout{}
			if i%3 == 0 {
				layout.Indirect = true
			}
			got, err := d.Submit(queue, [][]byte{req}, []int{1 + len(req)}, layout)
			if err != nil {
				fail(fmt.Errorf("queue %d submitter %d request %d: %w", queue, id, i, err))
				return
			}
			if got[0] != byte(queue) || !bytes.Equal(got[1:], req) {
				fail(fmt.Errorf("queue %d submitter %d request %d: got %x", queue, id, i, got))
				return
			}
		}
	}
	// forgets publishes no-reply chains in bursts (the kernel queues
	// forgets back to back), then waits for the burst.
	forgets := func(n, id int) {
		defer wg.Done()
		msg := make([]byte, 48)
		var burst []*testdriver.Pending
		flush := func() bool {
			for _, p := range burst {
				if _, err := p.Wait(); err != nil {
					fail(fmt.Errorf("hiprio submitter %d: %w", id, err))
					return false
				}
			}
			burst = burst[:0]
			return true
		}
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint64(msg, uint64(i))
			p, err := d.Start(0, [][]byte{msg}, nil, testdriver.Layout{})
			if err != nil {
				fail(fmt.Errorf("hiprio submitter %d forget %d: %w", id, i, err))
				return
			}
			burst = append(burst, p)
			if len(burst) == 1+rand.IntN(sr.queueSize) && !flush() {
				return
			}
		}
		flush()
	}
	for q := 1; q <= sr.reqQueues; q++ {
		for k := 0; k < sr.inFlight; k++ {
			wg.Add(1)
			go submit(q, sr.perQueue/sr.inFlight, k)
		}
	}
	for k := 0; k < 2; k++ {
		wg.Add(1)
		go forgets(sr.hiprio/2, k)
	}
	stopMask := make(chan struct{})
	masked := make(chan error, 1)
	go func() {
		defer close(masked)
		for n := 0; sr.maskCalls; n++ {
			select {
			case <-stopMask:
				return
			default:
			}
			if err := d.MaskCall(n%(1+sr.reqQueues), time.Duration(rand.IntN(300))*time.Microsecond); err != nil {
				masked <- err
				return
			}
		}
	}()
	wg.Wait()
	close(stopMask)
	if err := <-masked; err != nil {
		t.Error(err)
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for q := 0; q <= sr.reqQueues; q++ {
		if n := d.UnexpectedUsed(q); n != 0 {
			t.Errorf("queue %d: %d used entries for heads not in flight", q, n)
		}
	}
	// Every ring must still be consistent for the control plane: the
	// daemon's GET_VRING_BASE equals what the driver published.
	for q := 0; q <= sr.reqQueues; q++ {
		base, err := d.StopQueue(q)
		if err != nil {
			t.Fatalf("stopping queue %d: %v", q, err)
		}
		if want := d.AvailIdx(q); base != want {
			t.Errorf("queue %d: GET_VRING_BASE %d, driver published up to %d", q, base, want)
		}
	}
}

// TestStressRingsWrapWithForgetFlood is the in-process reproduction of a
// guest that hung at unmount after a long workload: both rings' 16-bit
// indexes wrap many times, request-queue completions come back out of
// order from several workers, hiprio takes floods of no-reply chains
// while the request queue is busy, and every chain must come back within
// the driver's timeout.
func TestStressRingsWrapWithForgetFlood(t *testing.T) {
	if err := unix.Access("/proc/self/fd", unix.R_OK); err != nil {
		t.Fatal(err)
	}
	total := 3 * 65536
	if testing.Short() {
		total = 40000
	}
	for _, tc := range []struct {
		name string
		run  stressRun
	}{
		{"event-idx/size8", stressRun{queueSize: 8, workers: 4, reqQueues: 1, perQueue: total, hiprio: total, inFlight: 8, startIndex: 0xfff0}},
		{"event-idx/size64/2queues", stressRun{queueSize: 64, workers: 3, reqQueues: 2, perQueue: total / 2, hiprio: total / 2, inFlight: 16, startIndex: 0xff00}},
		{"event-idx/inline", stressRun{queueSize: 16, workers: -1, reqQueues: 1, perQueue: total / 2, hiprio: total / 2, inFlight: 4}},
		{"no-event-idx/size16", stressRun{queueSize: 16, workers: 4, reqQueues: 1, perQueue: total / 2, hiprio: total / 2, inFlight: 8, noEventIdx: true, startIndex: 0xfffe}},
		{"event-idx/size32/masked-calls", stressRun{queueSize: 32, workers: 4, reqQueues: 1, perQueue: total / 2, hiprio: total / 2, inFlight: 8, startIndex: 0xfff8, maskCalls: true}},
	} {
		for _, kw := range kickWaits {
			t.Run(tc.name+"/"+string(kw), func(t *testing.T) {
				start := time.Now()
				tc.run.kickWait = kw
				tc.run.run(t)
				t.Logf("%v", time.Since(start))
			})
		}
	}
}

// kickWaits are the Options.KickWait modes every notification test runs
// in.
var kickWaits = []vhostuser.KickWait{vhostuser.KickWaitPoller, vhostuser.KickWaitPpoll}

// TestFaultInjectorLostNotificationsRecovered: a kick that never reaches
// the daemon, or a used-buffer signal the guest never sees, must not leave
// a request unanswered for ever: the idle leader looks at both rings by
// itself after Options.IdleCheck.
func TestFaultInjectorLostNotificationsRecovered(t *testing.T) {
	for _, tc := range []struct {
		name          string
		kicks, sigs   int
		noEventIdx    bool
		queue         int
		writableBytes int
		log           string // the line saying what was recovered
	}{
		{"lost-kick/event-idx", 1, 0, false, 1, 32, "published without a kick"},
		{"lost-kick/no-event-idx", 1, 0, true, 1, 32, "published without a kick"},
		{"lost-signal/event-idx", 0, 1, false, 1, 32, "not reaped every used entry"},
		{"lost-signal/no-event-idx", 0, 1, true, 1, 32, ""}, // nothing to tell it by
		{"lost-both/hiprio", 1, 1, false, 0, 0, "published without a kick"},
	} {
		for _, kw := range kickWaits {
			t.Run(tc.name+"/"+string(kw), func(t *testing.T) {
				l := logrus.New()
				l.SetOutput(io.Discard)
				hook := logtest.NewLocal(l)
				s := startServer(t, vhostuser.Options{RequestQueues: 1, IdleCheck: 100 * time.Millisecond, Logger: logrus.NewEntry(l), KickWait: kw})
				d := connect(t, s, testdriver.Options{RequestQueues: 1, QueueSize: 8, NoEventIdx: tc.noEventIdx, Timeout: 3 * time.Second})
				for i := 0; i < 10; i++ { // settle: the ring has wrapped once
					if _, err := d.Submit(tc.queue, [][]byte{[]byte("warm")}, writable(tc.writableBytes), testdriver.Layout{}); err != nil {
						t.Fatal(err)
					}
				}
				time.Sleep(300 * time.Millisecond) // the leader is idle, kicks armed
				d.InjectLostNotifications(tc.queue, tc.kicks, tc.sigs)
				start := time.Now()
				if _, err := d.Submit(tc.queue, [][]byte{[]byte("lost")}, writable(tc.writableBytes), testdriver.Layout{}); err != nil {
					t.Fatalf("request after a lost notification: %v", err)
				}
				took := time.Since(start)
				t.Logf("recovered in %v", took)
				// And the queue keeps working normally afterwards.
				if _, err := d.Submit(tc.queue, [][]byte{[]byte("after")}, writable(tc.writableBytes), testdriver.Layout{}); err != nil {
					t.Fatal(err)
				}
				// (The drop may hit this one if the leader was looking at the
				// ring, not waiting, when the first was published.)
				// (An idle wake just before the publish pops the chain at
				// once: nothing was lost, nothing is logged.)
				if tc.log != "" && took > 50*time.Millisecond {
					found := false
					for _, e := range hook.AllEntries() {
						found = found || strings.Contains(e.Message, tc.log)
					}
					if !found {
						t.Errorf("no log line with %q", tc.log)
					}
				}
			})
		}
	}
}

func writable(n int) []int {
	if n == 0 {
		return nil
	}
	return []int{n}
}

// GET_VRING_BASE must be answered within Options.StopTimeout even when a
// request is stuck in a device that ignores cancellation; the stuck
// request's late completion must not touch the ring the frontend owns
// again, and the ring restarts where it stopped.
func TestGetVringBaseBoundedWithStuckRequest(t *testing.T) {
	for _, kw := range kickWaits {
		t.Run(string(kw), func(t *testing.T) { getVringBaseBoundedWithStuckRequest(t, kw) })
	}
}

func getVringBaseBoundedWithStuckRequest(t *testing.T, kw vhostuser.KickWait) {
	s := startServer(t, vhostuser.Options{RequestQueues: 1, StopTimeout: 400 * time.Millisecond, KickWait: kw})
	d := connect(t, s, testdriver.Options{RequestQueues: 1, QueueSize: 8})
	wantEcho(t, d, 1, []byte("x"), testdriver.Layout{})
	stuck, err := d.Start(1, [][]byte{[]byte("Ignore")}, []int{8}, testdriver.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	<-s.dev.started
	start := time.Now()
	base, err := d.StopQueue(1)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("GET_VRING_BASE took %v with a 400ms stop timeout", el)
	}
	if base != 2 {
		t.Fatalf("GET_VRING_BASE = %d, want 2", base)
	}
	close(s.dev.release)
	select {
	case <-stuck.Done():
		t.Fatal("an abandoned request's completion reached the stopped ring")
	case <-time.After(200 * time.Millisecond):
	}
	if err := d.StartQueue(1, base); err != nil {
		t.Fatal(err)
	}
	wantEcho(t, d, 1, []byte("after restart"), testdriver.Layout{})
}

// A guest sending malformed chains as fast as it can gets about one log
// line a second per queue, not one per chain (review item 2.6).
func TestMalformedChainWarningsRateLimited(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	hook := logtest.NewLocal(l)
	s := startServer(t, vhostuser.Options{RequestQueues: 1, Logger: logrus.NewEntry(l)})
	d := connect(t, s, testdriver.Options{RequestQueues: 1, QueueSize: 16, MemRegions: []uint64{1 << 20}})
	const chains = 300
	start := time.Now()
	for i := 0; i < chains; i++ {
		// A buffer outside guest memory: consumed, given back with 0 bytes.
		p, err := d.StartRaw(1, []testdriver.Desc{{Addr: d.RAMEnd(), Len: 16}})
		if err != nil {
			t.Fatal(err)
		}
		if n := p.Len(); n != 0 {
			t.Fatalf("malformed chain answered with %d bytes", n)
		}
	}
	secs := time.Since(start).Seconds()
	warnings := 0
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel && strings.Contains(e.Message, "malformed") {
			warnings++
		}
	}
	if limit := 2 + int(secs); warnings == 0 || warnings > limit {
		t.Fatalf("%d warnings for %d malformed chains in %.1fs, want 1..%d", warnings, chains, secs, limit)
	}
	wantEcho(t, d, 1, []byte("still serving"), testdriver.Layout{})
}

// After the guest published an implausible available index (more than a
// queue ahead), the queue must come back once the index is sane again:
// kicks were left disabled (NO_NOTIFY) on that path, so the guest never
// kicked again. The idle check is off, so only the re-arm can save it.
func TestFaultInjectorBrokenAvailIndexRecovers(t *testing.T) {
	for _, noEventIdx := range []bool{true, false} {
		t.Run(fmt.Sprint("no-event-idx=", noEventIdx), func(t *testing.T) {
			s := startServer(t, vhostuser.Options{RequestQueues: 1, IdleCheck: -1})
			d := connect(t, s, testdriver.Options{RequestQueues: 1, QueueSize: 8, NoEventIdx: noEventIdx, Timeout: 3 * time.Second})
			wantEcho(t, d, 1, []byte("before"), testdriver.Layout{})
			restore, err := d.InjectBogusAvailIndex(1, 100)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // the daemon sees it and waits
			restore()
			wantEcho(t, d, 1, []byte("after the guest repaired its index"), testdriver.Layout{})
		})
	}
}
