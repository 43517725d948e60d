package backend

import "context"

type progressKey struct{}

// WithProgress returns a context that makes a remote blob's ReadAt(ctx,
// p, off) call fn(n) each time more of p has arrived: the first n bytes
// of p hold the blob's bytes. fn runs on the reading goroutine, between
// reads of the answer body, so it may look at p[:n] (and nothing after)
// without synchronising; a retried read starts again from n = 0 with the
// same bytes. Backends that read p in one piece (localfs) never call it:
// the caller treats the whole of p as arrived when ReadAt returns. The
// blob cache uses it to serve a merged request's first chunks while the
// rest of the answer is still on the wire.
func WithProgress(ctx context.Context, fn func(n int)) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

// progressOf is the context's progress callback (nil: none).
func progressOf(ctx context.Context) func(int) {
	fn, _ := ctx.Value(progressKey{}).(func(int))
	return fn
}
