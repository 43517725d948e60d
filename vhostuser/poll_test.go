package vhostuser_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// TestPollBeforeSleep: a request queue's leader that found its ring empty
// keeps looking at it for Options.PollBeforeSleep with kicks suppressed,
// so a request published meanwhile is served although the driver sends no
// kick; the hiprio queue never polls, and neither does a queue without the
// option. The driver loses the next kick it is asked for and the idle
// check is off, so a request that needed a kick is never served and its
// wait times out.
func TestPollBeforeSleep(t *testing.T) {
	modes := []vhostuser.KickWait{vhostuser.KickWaitPoller, vhostuser.KickWaitPpoll, vhostuser.KickWaitInline, vhostuser.KickWaitInlinePpoll}
	for _, tc := range []struct {
		name   string
		poll   time.Duration
		queue  int
		served bool
	}{
		{"request-queue/poll", 2 * time.Second, 1, true},
		{"request-queue/no-poll", 0, 1, false},
		{"hiprio/poll", 2 * time.Second, 0, false},
	} {
		for _, mode := range modes {
			t.Run(tc.name+"/"+string(mode), func(t *testing.T) {
				t.Parallel()
				s := startServer(t, vhostuser.Options{RequestQueues: 1, KickWait: mode, PollBeforeSleep: tc.poll, IdleCheck: -1})
				d := connect(t, s, testdriver.Options{RequestQueues: 1, Timeout: time.Second})
				// A first request, kicked: the leader serves it, finds the
				// ring empty and polls (or sleeps).
				wantEcho(t, d, tc.queue, []byte("first"), testdriver.Layout{})
				// Time for a leader that does not poll to go to sleep: one
				// still taking its last look at the ring would find the
				// next request without a kick (seen on a loaded host).
				time.Sleep(100 * time.Millisecond)
				d.InjectLostNotifications(tc.queue, 1, 0)
				got, err := d.Submit(tc.queue, [][]byte{[]byte("second")}, []int{7}, testdriver.Layout{})
				switch {
				case tc.served && err != nil:
					t.Fatalf("a request published while the leader polls was not served: %v", err)
				case tc.served && string(got) != string(rune(tc.queue))+"second":
					t.Fatalf("got %q", got)
				case !tc.served && !errors.Is(err, testdriver.ErrTimeout):
					t.Fatalf("a request whose kick was lost was served (%q, %v): the queue polled", got, err)
				}
			})
		}
	}
}
