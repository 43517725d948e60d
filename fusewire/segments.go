package fusewire

import (
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fsapi"
)

// The zero-copy result types and the SYNCFS hook live in fsapi (they
// describe a filesystem's answer); these names keep existing callers
// working.
type (
	Segment         = fsapi.Segment
	SegmentedResult = fsapi.SegmentedResult
	SyncFSer        = fsapi.SyncFSer
)

// FileResult is fsapi.FileResult.
func FileResult(fd int, off int64, n int) fuse.ReadResult { return fsapi.FileResult(fd, off, n) }

// SegmentsResult is fsapi.SegmentsResult.
func SegmentsResult(segs []Segment) fuse.ReadResult { return fsapi.SegmentsResult(segs) }
