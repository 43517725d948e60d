//go:build !nvfsguest

package check

// RawSyscalls reports whether the walks and reads use raw system calls:
// false outside the guest build (see GuestTag).
const RawSyscalls = false
