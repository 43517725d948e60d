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

// TestPollAdapts: polling follows the gaps between requests. After
// pollOffAfter (8) gaps in a row longer than Options.PollBeforeSleep the
// leader stops polling (a request whose kick is lost is then not served);
// the first gap the poll would have covered turns it back on (such a
// request is served without its kick); a lone long gap leaves it on.
func TestPollAdapts(t *testing.T) {
	t.Parallel()
	const poll = 20 * time.Millisecond
	for _, mode := range []vhostuser.KickWait{vhostuser.KickWaitPpoll, vhostuser.KickWaitInlinePpoll} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			s := startServer(t, vhostuser.Options{RequestQueues: 1, KickWait: mode, PollBeforeSleep: poll, IdleCheck: -1})
			d := connect(t, s, testdriver.Options{RequestQueues: 1, Timeout: 10 * poll})
			long := func() {
				t.Helper()
				time.Sleep(poll + poll/2)
				wantEcho(t, d, 1, []byte("late"), testdriver.Layout{})
			}
			unkicked := func() ([]byte, error) {
				d.InjectLostNotifications(1, 1, 0)
				return d.Submit(1, [][]byte{[]byte("unkicked")}, []int{9}, testdriver.Layout{})
			}
			for i := 0; i < 9; i++ {
				long()
			}
			if got, err := unkicked(); !errors.Is(err, testdriver.ErrTimeout) {
				t.Fatalf("after 9 gaps longer than the poll, a request without its kick was served (%q, %v): still polling", got, err)
			}
			// A kick pops the stuck one; then a gap the poll covers, which
			// turns polling back on, one long gap, which leaves it on, and
			// a request without its kick (a lost kick's injection lasts
			// until a kick is due, so only one such request can be served).
			if err := d.Kick(1); err != nil {
				t.Fatal(err)
			}
			time.Sleep(poll / 5)
			wantEcho(t, d, 1, []byte("near"), testdriver.Layout{})
			long()
			if got, err := unkicked(); err != nil || string(got) != "\x01unkicked" {
				t.Fatalf("after a gap within the poll's reach and one long gap, a request without its kick: %q, %v; want it served by polling", got, err)
			}
		})
	}
}
