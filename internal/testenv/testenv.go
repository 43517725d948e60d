// Package testenv decides what a test does when this host lacks something
// it needs (root, /dev/fuse, loop devices, EROFS, QEMU, a tool).
//
// On a developer's machine such a test skips. CI has all of them, so there a
// skip would only hide a test that never ran: with NVFS_REQUIRE_ALL=1 in the
// environment (.ci/run sets it) every such skip fails the test instead.
// Skips that are a choice of the runner (-short) stay plain t.Skip.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// EnvRequireAll names the environment variable that turns Skip into a
// failure.
const EnvRequireAll = "NVFS_REQUIRE_ALL"

// RequireAll reports whether missing host capabilities fail tests.
func RequireAll() bool {
	v := os.Getenv(EnvRequireAll)
	return v != "" && v != "0"
}

// Skip skips t for want of a host capability, or fails it under
// NVFS_REQUIRE_ALL.
func Skip(t testing.TB, args ...any) {
	t.Helper()
	msg := fmt.Sprint(args...)
	if RequireAll() {
		t.Fatalf("%s=1 and this test would skip: %s", EnvRequireAll, msg)
	}
	t.Skip(msg)
}

// Skipf is Skip with a format.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	Skip(t, fmt.Sprintf(format, args...))
}
