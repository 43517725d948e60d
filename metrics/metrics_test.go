package metrics

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
)

func TestBuckets(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want int
	}{{0, 0}, {1023, 0}, {1024, 1}, {4095, 1}, {4096, 2}, {16 << 10, 3}, {64 << 10, 4}, {128 << 10, 5}, {512 << 10, 6}, {1 << 20, 7}, {16 << 20, 7}} {
		if got := SizeBucket(tc.n); got != tc.want {
			t.Errorf("SizeBucket(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{{0, 0}, {200 * time.Microsecond, 0}, {201 * time.Microsecond, 1}, {time.Millisecond, 1}, {20 * time.Millisecond, 2},
		{50 * time.Millisecond, 3}, {500 * time.Millisecond, 4}, {time.Second, 5}, {2 * time.Second, 6}, {3 * time.Second, 7}} {
		if got := LatencyBucket(tc.d); got != tc.want {
			t.Errorf("LatencyBucket(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

func TestEventsBounded(t *testing.T) {
	for _, tc := range []struct {
		name            string
		maxN, maxSize   int
		add             []string
		want            []string
		total, totalLen uint64
	}{
		{"by count", 2, 100, []string{"a", "b", "c"}, []string{"b", "c"}, 3, 3},
		{"by size", 10, 5, []string{"aaa", "bbb", "c"}, []string{"bbb", "c"}, 3, 7},
		{"one too long is cut", 10, 4, []string{"abcdefgh"}, []string{"abcd"}, 1, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEvents(tc.maxN, tc.maxSize)
			for _, m := range tc.add {
				e.Add(m)
			}
			s := e.Snapshot()
			if strings.Join(s.Errors, ",") != strings.Join(tc.want, ",") || s.TotalErrors != tc.total || s.TotalSize != tc.totalLen {
				t.Errorf("%+v", s)
			}
		})
	}
}

func TestInflightTable(t *testing.T) {
	var tab inflight
	epoch := time.Now()
	a := tab.enter(10, 15, 7, time.Second)
	b := tab.enter(11, 3, 7+inflightSlots, 0) // same home slot: probes on
	if a == 0 || b == 0 || a == b {
		t.Fatalf("slots %d %d", a, b)
	}
	if got := tab.find(7 + inflightSlots); got != b {
		t.Errorf("find: %d, want %d", got, b)
	}
	l := tab.list(epoch)
	if len(l) != 2 || l[0].Unique != 7 || l[0].Inode != 10 || l[0].Opcode != 15 || l[0].TimestampSecs != epoch.Add(time.Second).Unix() {
		t.Fatalf("list %+v", l)
	}
	tab.leave(a)
	tab.leave(b)
	if l := tab.list(epoch); len(l) != 0 {
		t.Errorf("after leave: %+v", l)
	}
}

func TestRequestLogs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		level logrus.Level
		slow  time.Duration
		want  string // "" for no line
	}{
		{"debug: every request", logrus.DebugLevel, 0, "level=debug msg=\"fuse request\""},
		{"info: quiet", logrus.InfoLevel, 0, ""},
		{"slow at warn", logrus.InfoLevel, time.Nanosecond, "level=warning msg=\"slow FUSE request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf strings.Builder
			l := logrus.New()
			l.SetOutput(&buf)
			l.SetLevel(tc.level)
			d := NewDaemon(Options{Transport: TransportOptions{Logger: logrus.NewEntry(l), SlowThreshold: tc.slow, MeasureLatency: true}})
			info := &fusewire.RequestInfo{Queue: 1, Unique: 42, Opcode: fusewire.OpGetattr, NodeID: 7, Errno: 2}
			ctx := d.Transport.Begin(context.Background(), info)
			time.Sleep(time.Millisecond)
			d.Transport.End(ctx, info)
			out := buf.String()
			if tc.want == "" {
				if out != "" {
					t.Fatalf("logged %q", out)
				}
				return
			}
			for _, w := range []string{tc.want, "req=q1-42", "op=GETATTR", "nodeid=7", "result=\"no such file or directory\"", "duration_us="} {
				if !strings.Contains(out, w) {
					t.Errorf("no %q in %q", w, out)
				}
			}
		})
	}
}
