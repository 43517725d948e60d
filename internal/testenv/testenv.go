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
