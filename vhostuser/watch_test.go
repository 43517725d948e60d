package vhostuser

import (
	"testing"
	"time"
)

// TestInlineWatch drives one look of an inline queue's rescue watch from
// each state: it stays armed while requests keep being served (a guest's
// one-at-a-time loop must not pay a timer re-arm per request), disarms
// once a whole period passed with nothing served and nothing in service,
// and wakes a helper only when a request in service has held the queue
// for a whole period and nobody leads.
func TestInlineWatch(t *testing.T) {
	for _, tc := range []struct {
		name       string
		serving    int32
		servedNow  bool // a request finished since the last look
		leaderFree bool // the lead token is free
		wantArmed  bool
		wantWake   bool
	}{
		{"busy-loop-between-requests", 0, true, true, true, false},
		{"idle-period", 0, false, true, false, false},
		{"request-stuck-nobody-leads", 1, false, true, true, true},
		{"request-stuck-someone-leads", 1, false, false, true, false},
		{"requests-finishing", 1, true, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &inlinePool{
				r:       &runner{lead: make(chan struct{}, 1)},
				wake:    make(chan struct{}, 1),
				helpers: true,
			}
			// A timer that does nothing when watch re-arms it: each look is
			// made by the test.
			p.rescue = time.AfterFunc(time.Hour, func() {})
			defer p.rescue.Stop()
			p.armed.Store(true)
			p.served.Store(10)
			p.seen.Store(10)
			if tc.servedNow {
				p.served.Store(11)
			}
			p.serving.Store(tc.serving)
			if tc.leaderFree {
				p.r.lead <- struct{}{}
			}
			p.watch()
			if got := p.armed.Load(); got != tc.wantArmed {
				t.Errorf("armed after the look: %v, want %v", got, tc.wantArmed)
			}
			if got := len(p.wake) > 0; got != tc.wantWake {
				t.Errorf("helper woken: %v, want %v", got, tc.wantWake)
			}
			if p.seen.Load() != p.served.Load() {
				t.Errorf("the look did not record what was served")
			}
		})
	}
}
