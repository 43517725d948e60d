package fusewire

import (
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
// host file segments. fusewire copies such a result with preadv straight
// into the guest's buffers; any other ReadResult goes through Bytes.
//
// The file descriptors must stay open until Done is called.
type SegmentedResult interface {
	fuse.ReadResult
	Segments() []Segment
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
		want := s.Len
		if want > len(buf)-total {
			want = len(buf) - total
		}
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
