package backend

import (
	"context"
	"errors"
	"os"
)

// ErrNotFound is returned (wrapped) by Open when the backend has no blob
// with the requested id.
var ErrNotFound = errors.New("blob not found")

// Backend opens blobs by id. Implementations must be safe for concurrent use.
type Backend interface {
	// Open returns the blob named id. The caller closes it.
	Open(ctx context.Context, id string) (Blob, error)
}

// Blob is one open blob. ReadAt follows io.ReaderAt's rules (a short read
// returns an error, io.EOF at the end) and is safe for concurrent use.
type Blob interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	// Size is the blob's size in bytes.
	Size() int64
	Close() error
}

// FileBlob is a Blob whose bytes sit in a local file. File returns that
// file; it stays open until the Blob is closed. Filesystems use its fd to
// serve uncompressed chunk data without copying it through user space.
type FileBlob interface {
	Blob
	File() *os.File
}
