package rafs

import "github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"

// Short names some tests use for layout constants.
const (
	tocCompressNone  = layout.TOCCompressNone
	tocCompressZstd  = layout.TOCCompressZstd
	layoutChunkBased = layout.LayoutChunkBased
)
