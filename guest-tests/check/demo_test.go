package check

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoShowsTheStart: the demo shows the start of a file, not 4 KiB of
// it (issue 16 item 11).
func TestDemoShowsTheStart(t *testing.T) {
	dir := t.TempDir()
	body := strings.Repeat("line of a source file\n", 500)
	if err := os.WriteFile(filepath.Join(dir, "big.rs"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Demo(&out, dir, filepath.Join(dir, "big.rs")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "(256 of 11000 bytes)") || out.Len() > 1024 {
		t.Fatalf("demo output (%d bytes):\n%s", out.Len(), out.String())
	}
}
