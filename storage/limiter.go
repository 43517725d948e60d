package storage

import (
	"context"
	"sync"
	"time"
)

// limiter is the prefetch bandwidth limit: a token bucket of capacity
// max(rate, 16 MiB) refilled rate/10 every 100 ms (computed lazily from
// the elapsed time). Reads take tokens without waiting and may drive the
// bucket negative, which delays prefetch; prefetch waits for tokens.
type limiter struct {
	rate int64 // bytes per second; 0: unlimited
	cap  int64

	mu     sync.Mutex
	tokens int64
	last   time.Time
}

func newLimiter(rate int64) *limiter {
	l := &limiter{rate: rate}
	if rate > 0 {
		l.cap = max(rate, 16<<20)
		l.tokens = l.cap
		l.last = time.Now()
	}
	return l
}

func (l *limiter) refill(now time.Time) {
	ticks := int64(now.Sub(l.last) / (100 * time.Millisecond))
	if ticks <= 0 {
		return
	}
	l.last = l.last.Add(time.Duration(ticks) * 100 * time.Millisecond)
	l.tokens = min(l.cap, l.tokens+ticks*max(l.rate/10, 1))
}

// take consumes n bytes of budget without waiting (on-demand reads).
func (l *limiter) take(n int64) {
	if l.rate <= 0 {
		return
	}
	l.mu.Lock()
	l.refill(time.Now())
	l.tokens -= n
	l.mu.Unlock()
}

// wait consumes n bytes of budget, waiting until the bucket has them (a
// request larger than the capacity waits for a full bucket).
func (l *limiter) wait(ctx context.Context, n int64) error {
	if l.rate <= 0 {
		return nil
	}
	n = min(n, l.cap)
	for {
		l.mu.Lock()
		now := time.Now()
		l.refill(now)
		if l.tokens >= n {
			l.tokens -= n
			l.mu.Unlock()
			return nil
		}
		short := n - l.tokens
		l.mu.Unlock()
		d := time.Duration(short*int64(time.Second)/l.rate) + time.Millisecond
		d = min(max(d, 10*time.Millisecond), 100*time.Millisecond)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
