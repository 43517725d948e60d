package e2e

import (
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// TestHarnessServesLikeTheDaemon: without NVFS_KICK_WAIT and
// NVFS_POLL_BEFORE_SLEEP, the daemons here wait and poll as
// nydus-virtiofsd does by default, so that the benchmarks measure the
// daemon as it ships (the harness once served with vhostuser's zero
// Options, and its SequentialRead figures described a configuration
// nobody runs); with them, the variables win.
func TestHarnessServesLikeTheDaemon(t *testing.T) {
	t.Setenv(EnvKickWait, "")
	t.Setenv(EnvPoll, "")
	if got := kickWait(); got != vhostuser.RecommendedKickWait {
		t.Errorf("kick wait %q, want the daemon's %q", got, vhostuser.RecommendedKickWait)
	}
	if got := pollBeforeSleep(t); got != vhostuser.RecommendedPollBeforeSleep {
		t.Errorf("poll before sleep %v, want the daemon's %v", got, vhostuser.RecommendedPollBeforeSleep)
	}
	t.Setenv(EnvKickWait, "poller")
	t.Setenv(EnvPoll, "0")
	if got, p := kickWait(), pollBeforeSleep(t); got != vhostuser.KickWaitPoller || p != 0 {
		t.Errorf("with the variables set: %q, %v; want poller, 0", got, p)
	}
}
