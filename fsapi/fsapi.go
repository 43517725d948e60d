package fsapi

import (
	"context"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Segment is a run of bytes in a host file: Len bytes of Fd starting at Off.
type Segment struct {
	Fd  int
	Off int64
	Len int
}

// SegmentedResult is a fuse.ReadResult that can also describe its data as
// host file segments. The transport copies such a result with preadv
// straight into the reader's buffers; any other ReadResult goes through
// Bytes.
//
// The file descriptors must stay open until Done is called.
type SegmentedResult interface {
	fuse.ReadResult
	Segments() []Segment
}

// ContextReader is implemented by filesystems whose reads take the FUSE
// request's context. The transport calls ReadContext instead of Read when
// the filesystem has it; the context is done when the request is
// abandoned.
type ContextReader interface {
	ReadContext(ctx context.Context, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status)
}

// SyncFSer is implemented by filesystems that can answer SYNCFS (the
// guest's syncfs(2)). Others get ENOSYS, which the guest remembers and
// treats as success.
type SyncFSer interface {
	SyncFS(cancel <-chan struct{}, header *fuse.InHeader) fuse.Status
}

// FileResult returns a read result for n bytes of fd at off. It is the
// zero-copy counterpart of fuse.ReadResultFd.
func FileResult(fd int, off int64, n int) fuse.ReadResult {
	return &fileResult{segs: []Segment{{Fd: fd, Off: off, Len: n}}}
}

// SegmentsResult returns a read result made of several file segments, read
// in order.
func SegmentsResult(segs []Segment) fuse.ReadResult {
	return &fileResult{segs: segs}
}

type fileResult struct {
	segs []Segment
}

func (r *fileResult) Segments() []Segment { return r.segs }

func (r *fileResult) Size() int {
	n := 0
	for _, s := range r.segs {
		n += s.Len
	}
	return n
}

// Bytes reads the segments into buf, stopping at the first short read (end
// of file), as pread would.
func (r *fileResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	w := bufFiller{buf: buf}
	n, err := FillSegments(&w, r.segs)
	if err != nil && n == 0 {
		return nil, fuse.ToStatus(err)
	}
	return buf[:n], fuse.OK
}

// SegmentFiller is where FillSegments puts the bytes: a virtqueue.Cursor
// over a chain's writable buffers (or over one buffer).
type SegmentFiller interface {
	Len() int
	FillFromFile(fd int, off int64, n int) (int, error)
}

// FillSegments reads the segments in order into w, as much as w has room
// for, and returns the bytes read. It stops at the first short segment
// (end of file). An error after some bytes were read ends the data there,
// as read(2) would; the error is returned with the count.
func FillSegments(w SegmentFiller, segs []Segment) (int, error) {
	total := 0
	for _, s := range segs {
		room := w.Len()
		if room == 0 {
			break
		}
		if s.Len < 0 || s.Off < 0 {
			return total, unix.EINVAL
		}
		want := min(s.Len, room)
		n, err := w.FillFromFile(s.Fd, s.Off, want)
		total += n
		if err != nil || n < want {
			return total, err
		}
	}
	return total, nil
}

func (r *fileResult) Done() {}

// bufFiller fills one plain buffer (the transport fills guest buffers
// through virtqueue.Cursor; this package stays below the transport).
type bufFiller struct {
	buf []byte
	n   int
}

func (b *bufFiller) Len() int { return len(b.buf) - b.n }

func (b *bufFiller) FillFromFile(fd int, off int64, n int) (int, error) {
	got := 0
	for got < n {
		m, err := unix.Pread(fd, b.buf[b.n:b.n+n-got], off+int64(got))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return got, err
		}
		if m == 0 {
			break
		}
		got += m
		b.n += m
	}
	return got, nil
}

// CancelContext turns a go-fuse cancel channel into a context without
// starting a goroutine: for callers of the channel-based API (go-fuse's
// own server, RawFileSystem.Read) that must call a context-taking one.
func CancelContext(cancel <-chan struct{}) context.Context {
	if cancel == nil {
		return context.Background()
	}
	return cancelContext{cancel}
}

type cancelContext struct{ c <-chan struct{} }

func (c cancelContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c cancelContext) Done() <-chan struct{}       { return c.c }
func (c cancelContext) Err() error {
	select {
	case <-c.c:
		return context.Canceled
	default:
		return nil
	}
}
func (c cancelContext) Value(any) any { return nil }
