package ratelog

import (
	"sync/atomic"
	"time"
)

// DefaultInterval is the interval of a zero Limiter: one line a second.
const DefaultInterval = time.Second

// Limiter allows one event per interval. The zero value allows one event
// per DefaultInterval; it is safe for concurrent use and must not be copied
// after first use.
type Limiter struct {
	// Interval between allowed events (DefaultInterval when 0). Set it
	// before first use.
	Interval   time.Duration
	next       atomic.Int64 // unix nanoseconds before which events are held back
	suppressed atomic.Int64
}

// Allow reports whether an event may be logged now. When it returns true,
// suppressed is the number of events held back since the last allowed one.
func (l *Limiter) Allow() (ok bool, suppressed int64) {
	now := time.Now().UnixNano()
	at := l.next.Load()
	every := l.Interval
	if every <= 0 {
		every = DefaultInterval
	}
	if now < at || !l.next.CompareAndSwap(at, now+int64(every)) {
		l.suppressed.Add(1)
		return false, 0
	}
	return true, l.suppressed.Swap(0)
}
