// Package fuseclient is a small FUSE client for tests: it builds FUSE
// requests as byte slices the way a Linux guest lays them out, sends them
// through any transport, and parses the replies. It is hand-written because
// no Go library speaks the client side of FUSE (the kernel is the usual
// client); it reuses go-fuse's wire structs.
package fuseclient
