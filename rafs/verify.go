package rafs

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// VerifyBlobs opens every blob of the image through its backend, so that
// a missing blob is reported when the image is mounted rather than as EIO
// on a guest's first read. A remote backend answers with what its Open
// costs (a HEAD, a stat). The blobs stay open for the reads to come (they
// would be opened on the first read anyway). The error names each blob
// that cannot be opened and, through the backend's error, where it was
// looked for. An image opened without a backend has nothing to verify.
func (img *Image) VerifyBlobs(ctx context.Context) error {
	be := img.opts.Backend
	if be == nil {
		return nil
	}
	var errs []string
	for _, b := range img.blobs {
		o, err := b.open(ctx, be)
		if err == nil {
			// The storage layer opens the backend's blob lazily; asking
			// for its size makes it do so now (or answers from a cache
			// that holds the blob).
			if _, err = o.r.Size(ctx); err != nil && !strings.Contains(err.Error(), b.id) {
				err = fmt.Errorf("blob %s: %w", b.id, err)
			}
		}
		if err != nil {
			// open prefixes the blob id; the backend's error names it
			// already when it says where it looked.
			if inner := errors.Unwrap(err); inner != nil && strings.Contains(inner.Error(), b.id) {
				err = inner
			}
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d of the image's %d blobs cannot be opened: %s", len(errs), len(img.blobs), strings.Join(errs, "; "))
	}
	return nil
}
