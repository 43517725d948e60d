package convert

import (
	"fmt"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// progress prints one line per layer event (pulled, converted, pushed)
// when it has somewhere to print; nil writer: quiet.
type progress struct {
	mu sync.Mutex
	w  io.Writer
}

func newProgress(w io.Writer) *progress { return &progress{w: w} }

func (p *progress) layer(i, n int, d v1.Hash, stage string, bytes int64) {
	if p.w == nil {
		return
	}
	short := d.Hex
	if len(short) > 12 {
		short = short[:12]
	}
	size := ""
	if bytes > 0 {
		size = fmt.Sprintf(" %.1f MiB", float64(bytes)/(1<<20))
	}
	p.printf("layer %d/%d %s: %s%s\n", i+1, n, short, stage, size)
}

func (p *progress) printf(format string, args ...any) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}
