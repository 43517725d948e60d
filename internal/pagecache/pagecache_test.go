package pagecache

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDropAndRead: a written file is resident, dropped it is not, and a
// read of one page brings that page back.
func TestDropAndRead(t *testing.T) {
	page := int64(os.Getpagesize())
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 16*page), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := ResidentBytes(path); err != nil || n != 16*page {
		t.Fatalf("written: %d bytes resident, %v", n, err)
	}
	if err := Drop(path, 0, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := ResidentBytes(path); err != nil || n != 0 {
		t.Fatalf("dropped: %d bytes resident, %v", n, err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Drop(path, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 1), 5*page); err != nil {
		t.Fatal(err)
	}
	r, err := Resident(path, 0, 16*page)
	if err != nil {
		t.Fatal(err)
	}
	if !r[5] {
		t.Fatalf("the page read is not resident: %v", r)
	}
}
