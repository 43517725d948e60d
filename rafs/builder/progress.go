package builder

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// startProgress draws a progress bar on w (when non-nil) until the returned
// function is called.
func startProgress(w io.Writer, ck *chunker, total int64) func() {
	if w == nil || total < 64<<20 {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	draw := func() {
		in := ck.bytesIn.Load()
		frac := float64(in) / float64(total)
		if frac > 1 {
			frac = 1
		}
		const width = 30
		bar := strings.Repeat("=", int(frac*width)) + strings.Repeat(" ", width-int(frac*width))
		rate := float64(in) / time.Since(start).Seconds() / (1 << 20)
		fmt.Fprintf(w, "\r[%s] %5.1f%% %d/%d MiB %.0f MiB/s", bar, frac*100, in>>20, total>>20, rate)
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				draw()
				fmt.Fprintln(w)
				return
			case <-t.C:
				draw()
			}
		}
	}()
	return func() { close(done); <-finished }
}
