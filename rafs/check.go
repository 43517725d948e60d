package rafs

import "context"

// CheckOptions tune Check.
type CheckOptions struct{}

// Check is a placeholder.
func (img *Image) Check(ctx context.Context, o CheckOptions) error { return nil }
