package builder

import "github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"

// Short names some tests use for layout constants.
const (
	erofsSBOffset   = layout.SuperOffset
	v6BlobEntrySize = layout.BlobEntryV6Size
	blobMetaHdrSize = layout.BlobMetaHdrSize
	blobMetaMagic   = layout.BlobMetaMagic
	tocFlagZstd     = layout.TOCCompressZstd
)
