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
// finds it done by looking at the used ring itself (the daemon answers a
// GETATTR well within seconds); without, every request is completed by the
// reaper the call eventfd wakes.
func TestDriverHaltPoll(t *testing.T) {
	for _, tc := range []struct {
		name     string
		haltPoll time.Duration
		want     func(polled int64) bool
	}{
		{"halt-poll", 5 * time.Second, func(n int64) bool { return n > 0 }},
		{"none", 0, func(n int64) bool { return n == 0 }},
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
			const n = 20
			for i := 0; i < n; i++ {
				if _, err := c.GetAttr(fuse.FUSE_ROOT_ID); err != nil {
					t.Fatalf("GETATTR %d: %v", i, err)
				}
			}
			if got := g.drv.HaltPolled(); !tc.want(got) {
				t.Errorf("%d of %d requests completed by a halt-polling wait", got, n+1)
			}
		})
	}
}
