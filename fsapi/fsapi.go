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
	total := 0
	for _, s := range r.segs {
		want := min(s.Len, len(buf)-total)
		got := 0
		for got < want {
			n, err := unix.Pread(s.Fd, buf[total+got:total+want], s.Off+int64(got))
			if err != nil {
				return nil, fuse.ToStatus(err)
			}
			if n == 0 {
				break
			}
			got += n
		}
		total += got
		if got < s.Len {
			break
		}
	}
	return buf[:total], fuse.OK
}

func (r *fileResult) Done() {}

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
