package layering

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/nydus-virtiofsd/nydus-virtiofsd/"

// TestDependenciesPointOneWay lists, with go list, every package each
// pattern depends on (tests excluded) and fails on any it must not.
func TestDependenciesPointOneWay(t *testing.T) {
	transport := []string{"fusewire", "vhostuser", "virtqueue", "api", "cmd/"}
	for _, tc := range []struct {
		pattern   string
		forbidden []string
	}{
		{"./fsapi", slices.Concat(transport, []string{"passthrough", "rafs", "vfs", "storage", "backend"})},
		{"./passthrough", slices.Concat(transport, []string{"rafs", "vfs", "storage", "backend"})},
		{"./vfs", transport},
		{"./rafs/...", slices.Concat(transport, []string{"passthrough", "vfs"})},
		{"./storage/...", slices.Concat(transport, []string{"passthrough", "rafs", "vfs"})},
		{"./backend/...", slices.Concat(transport, []string{"passthrough", "rafs", "vfs", "storage"})},
		{"./virtqueue", []string{"vhostuser", "fusewire", "api", "cmd/"}},
		{"./vhostuser", []string{"fusewire", "passthrough", "rafs", "vfs", "storage", "backend", "api", "cmd/"}},
	} {
		t.Run(strings.Trim(tc.pattern, "./"), func(t *testing.T) {
			cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", tc.pattern)
			cmd.Dir = "../.."
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list %s: %v", tc.pattern, err)
			}
			for _, dep := range strings.Fields(string(out)) {
				rel, ok := strings.CutPrefix(dep, module)
				if !ok {
					continue
				}
				for _, f := range tc.forbidden {
					if rel == strings.TrimSuffix(f, "/") || strings.HasPrefix(rel, strings.TrimSuffix(f, "/")+"/") {
						t.Errorf("%s depends on %s", tc.pattern, rel)
					}
				}
			}
		})
	}
}
