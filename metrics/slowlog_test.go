package metrics

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
)

// TestSlowWarningsLimited: slow-request warnings come at most one per
// SlowLogInterval, and the next one says how many were held back.
func TestSlowWarningsLimited(t *testing.T) {
	var buf strings.Builder
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.InfoLevel)
	const interval = time.Second
	d := NewDaemon(Options{Transport: TransportOptions{Logger: l, SlowThreshold: time.Nanosecond, SlowLogInterval: interval}})
	slow := func() {
		info := &fusewire.RequestInfo{Queue: 1, Unique: 1, Opcode: fusewire.OpGetattr, NodeID: 1}
		ctx := d.Transport.Begin(context.Background(), info)
		time.Sleep(time.Millisecond)
		d.Transport.End(ctx, info)
	}
	for range 3 { // well inside one interval, even on a loaded machine
		slow()
	}
	if n := strings.Count(buf.String(), "slow FUSE request"); n != 1 {
		t.Fatalf("%d warnings within one interval, want 1:\n%s", n, buf.String())
	}
	time.Sleep(interval)
	slow()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "slow_suppressed=2") {
		t.Fatalf("second warning does not count the two held back:\n%s", buf.String())
	}
}
