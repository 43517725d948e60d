package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSkipFailsWhenRequired runs the helper test below in a child process
// with and without the switch and checks the outcome of each.
func TestSkipFailsWhenRequired(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") != "" {
		Skip(t, "no such capability")
		return
	}
	for _, tc := range []struct {
		env      string
		wantFail bool
		wantText string
	}{
		{"", false, "--- SKIP"},
		{"0", false, "--- SKIP"},
		{"1", true, "would skip: no such capability"},
	} {
		t.Run("NVFS_REQUIRE_ALL="+tc.env, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSkipFailsWhenRequired$", "-test.v")
			cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", EnvRequireAll+"="+tc.env)
			out, err := cmd.CombinedOutput()
			if (err != nil) != tc.wantFail {
				t.Fatalf("child failed=%v, want %v:\n%s", err != nil, tc.wantFail, out)
			}
			if !strings.Contains(string(out), tc.wantText) {
				t.Fatalf("child output lacks %q:\n%s", tc.wantText, out)
			}
		})
	}
}
