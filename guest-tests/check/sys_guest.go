//go:build nvfsguest

package check

// RawSyscalls reports whether the walks and reads use raw system calls:
// true in the guest build (tag GuestTag).
const RawSyscalls = true
