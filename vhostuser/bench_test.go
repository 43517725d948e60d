package vhostuser_test

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// BenchmarkTransportEcho measures the bare transport: a 16-byte request and
// its 17-byte echo through kick → pop → worker → push → call, with 1 and 4
// request queues and a few requests in flight per queue; and one request at
// a time (round-trip latency); each with the leader waiting for kicks in
// the Go poller and in ppoll(2), and serving inline (Options.KickWait).
func BenchmarkTransportEcho(b *testing.B) {
	for _, tc := range []struct {
		queues, inflight int
		poll             time.Duration
		kick             vhostuser.KickWait
	}{
		{1, 1, 0, vhostuser.KickWaitPoller}, {1, 1, 0, vhostuser.KickWaitPpoll}, {1, 1, 20 * time.Microsecond, vhostuser.KickWaitPoller},
		{1, 8, 0, vhostuser.KickWaitPoller}, {1, 8, 0, vhostuser.KickWaitPpoll}, {1, 8, 20 * time.Microsecond, vhostuser.KickWaitPoller},
		{4, 8, 0, vhostuser.KickWaitPoller}, {4, 8, 0, vhostuser.KickWaitPpoll},
		{1, 1, 0, vhostuser.KickWaitInline}, {1, 1, 0, vhostuser.KickWaitInlinePpoll},
		{1, 8, 0, vhostuser.KickWaitInline}, {1, 8, 0, vhostuser.KickWaitInlinePpoll},
		{4, 8, 0, vhostuser.KickWaitInline},
	} {
		name := fmt.Sprintf("queues=%d/inflight=%d/kick=%s", tc.queues, tc.inflight, tc.kick)
		if tc.poll > 0 {
			name += "/poll=" + tc.poll.String() // Options.PollBeforeSleep
		}
		b.Run(name, func(b *testing.B) {
			s := startServer(b, vhostuser.Options{RequestQueues: tc.queues, PollBeforeSleep: tc.poll, KickWait: tc.kick})
			d := connect(b, s, testdriver.Options{Sequence: testdriver.CloudHypervisor, RequestQueues: tc.queues, QueueSize: 256})
			req := [][]byte{[]byte("0123456789abcdef")}
			sizes := []int{17}
			var next atomic.Int64
			var wg sync.WaitGroup
			var failed atomic.Value
			b.ResetTimer()
			for q := 1; q <= tc.queues; q++ {
				for g := 0; g < tc.inflight; g++ {
					wg.Add(1)
					go func(q int) {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if _, err := d.Submit(q, req, sizes, testdriver.Layout{}); err != nil {
								failed.Store(err)
								return
							}
						}
					}(q)
				}
			}
			wg.Wait()
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkKickDeadline measures what the bounded kick wait adds per wait
// (Options.IdleCheck): arming a read deadline on the kick eventfd, a
// runtime timer and no system call. It is paid only when a leader finds
// its ring empty, at most once per request.
func BenchmarkKickDeadline(b *testing.B) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		b.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "kick")
	defer f.Close()
	for i := 0; i < b.N; i++ {
		if err := f.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPollGaps measures what polling an empty ring costs and buys for
// a guest sending one request at a time with a gap between a reply and its
// next request (a guest computing between requests): the process's CPU
// time per request (cpu-us/op; the driver's share, the gap's spin
// included, is the same in every row of a gap) and the round trip
// (rtt-us/op, gap excluded), with the daemon's poll (200 µs) against no
// poll in the same run. Gaps the poll covers trade CPU for the kick and
// the wake-up; a longer gap costs the whole poll for nothing
// (docs/benchmarks.md, issue 15, Session 8).
func BenchmarkPollGaps(b *testing.B) {
	for _, gap := range []time.Duration{0, 50 * time.Microsecond, time.Millisecond} {
		for _, poll := range []time.Duration{0, 200 * time.Microsecond} {
			b.Run(fmt.Sprintf("gap=%v/poll=%v", gap, poll), func(b *testing.B) {
				s := startServer(b, vhostuser.Options{RequestQueues: 1, PollBeforeSleep: poll, KickWait: vhostuser.KickWaitInlinePpoll})
				d := connect(b, s, testdriver.Options{Sequence: testdriver.QEMU, RequestQueues: 1})
				req := [][]byte{[]byte("0123456789abcdef")}
				sizes := []int{17}
				var rtt time.Duration
				var ru0, ru1 unix.Rusage
				b.ResetTimer()
				_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
				for i := 0; i < b.N; i++ {
					// The guest computes: a spin, since a sleep this
					// short lasts a timer tick (about 1 ms here).
					for end := time.Now().Add(gap); time.Now().Before(end); {
					}
					start := time.Now()
					if _, err := d.Submit(1, req, sizes, testdriver.Layout{}); err != nil {
						b.Fatal(err)
					}
					rtt += time.Since(start)
				}
				_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
				b.StopTimer()
				cpu := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano())
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
				b.ReportMetric(float64(rtt.Microseconds())/float64(b.N), "rtt-us/op")
			})
		}
	}
}
