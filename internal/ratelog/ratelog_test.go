package ratelog

import (
	"sync"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{{"default", 0}, {"short", 20 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			l := &Limiter{Interval: tc.interval}
			if ok, n := l.Allow(); !ok || n != 0 {
				t.Fatalf("first event: Allow() = %v, %d; want true, 0", ok, n)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			allowed := 0
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 1000; i++ {
						if ok, _ := l.Allow(); ok {
							mu.Lock()
							allowed++
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			if tc.interval == 0 && allowed != 0 {
				t.Fatalf("%d events allowed within the default interval, want 0", allowed)
			}
			if tc.interval == 0 {
				return
			}
			time.Sleep(tc.interval)
			ok, n := l.Allow()
			if !ok {
				t.Fatal("event after the interval held back")
			}
			// Counts restart at each allowed event; on a slow machine
			// some events of the burst may have passed.
			if (allowed == 0 && n != 8000) || n < 0 || n > 8000 {
				t.Fatalf("suppressed = %d after %d allowed of 8000", n, allowed)
			}
		})
	}
}
