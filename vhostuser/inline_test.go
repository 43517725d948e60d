package vhostuser_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// TestInlineSlowRequestRescued: in the modes where the leader serves
// inline and keeps the lead, a request stuck in the device must not hold
// up the queue: a helper takes the lead (after the watch's period) and
// serves the requests behind it, and a burst of stuck requests still gets
// one goroutine each, up to Options.Workers.
func TestInlineSlowRequestRescued(t *testing.T) {
	for _, mode := range []vhostuser.KickWait{vhostuser.KickWaitInline, vhostuser.KickWaitInlinePpoll} {
		t.Run(string(mode), func(t *testing.T) {
			const workers = 4
			s := startServer(t, vhostuser.Options{RequestQueues: 1, Workers: workers, KickWait: mode})
			d := connect(t, s, testdriver.Options{RequestQueues: 1})
			var slow []*testdriver.Pending
			start := func(i int) {
				p, err := d.Start(1, [][]byte{[]byte(fmt.Sprintf("Slow %d", i))}, []int{16}, testdriver.Layout{})
				if err != nil {
					t.Fatal(err)
				}
				select {
				case <-s.dev.started:
				case <-time.After(5 * time.Second):
					t.Fatalf("slow request %d did not start", i)
				}
				slow = append(slow, p)
			}
			for i := 0; i < workers-1; i++ {
				start(i)
				for k := 0; k < 5; k++ {
					wantEcho(t, d, 1, []byte(fmt.Sprintf("fast %d.%d", i, k)), testdriver.Layout{})
				}
			}
			close(s.dev.release)
			for i, p := range slow {
				if got, err := p.Wait(); err != nil || string(got) != fmt.Sprintf("\x01Slow %d", i) {
					t.Fatalf("slow request %d: %q %v", i, got, err)
				}
			}
			for k := 0; k < 20; k++ {
				wantEcho(t, d, 1, []byte(fmt.Sprintf("after %d", k)), testdriver.Layout{})
			}
		})
	}
}
