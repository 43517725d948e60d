package e2e

import (
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
)

// TestDriverHaltPoll checks the test driver's model of KVM halt polling
// that BenchmarkSequentialRead relies on: with HaltPoll, a request's Wait
// finds it done by looking at the used ring itself, so it completes even
// when every call-eventfd wake-up is lost (injected, so that the reaper
// never collects and cannot win the race to the used ring, which made an
// earlier form of this test flaky on a loaded host); without HaltPoll,
// every request is completed by the reaper the call eventfd wakes.
func TestDriverHaltPoll(t *testing.T) {
	for _, tc := range []struct {
		name        string
		haltPoll    time.Duration
		loseSignals bool
		want        func(polled, n int64) bool
	}{
		{"halt-poll-signals-lost", 5 * time.Second, true, func(p, n int64) bool { return p == n }},
		{"none", 0, false, func(p, n int64) bool { return p == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := passthrough.New(t.TempDir(), passthrough.Options{Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			dm := startDaemon(t, fs, 1, 0)
			opts := guestOpts(testdriver.QEMU, 1)
			opts.HaltPoll = tc.haltPoll
			g := connectGuestOpts(t, dm, opts)
			c := g.client(1, testdriver.Layout{})
			g.init(c)
			if tc.loseSignals {
				g.drv.InjectLostNotifications(1, 0, 1<<20)
			}
			before := g.drv.HaltPolled()
			const n = 20
			for i := 0; i < n; i++ {
				if _, err := c.GetAttr(fuse.FUSE_ROOT_ID); err != nil {
					t.Fatalf("GETATTR %d: %v", i, err)
				}
			}
			if got := g.drv.HaltPolled() - before; !tc.want(got, n) {
				t.Errorf("%d of %d requests completed by a halt-polling wait", got, n)
			}
		})
	}
}
