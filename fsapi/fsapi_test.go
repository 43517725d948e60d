package fsapi

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestFileResultBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	tests := []struct {
		name string
		segs []Segment
		buf  int
		want string
	}{
		{"one", []Segment{{fd, 2, 3}}, 16, "234"},
		{"two", []Segment{{fd, 8, 2}, {fd, 0, 2}}, 16, "8901"},
		{"short at eof stops", []Segment{{fd, 8, 5}, {fd, 0, 2}}, 16, "89"},
		{"buffer limits", []Segment{{fd, 0, 10}}, 4, "0123"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := SegmentsResult(tc.segs)
			got, st := r.Bytes(make([]byte, tc.buf))
			if !st.Ok() || !bytes.Equal(got, []byte(tc.want)) {
				t.Fatalf("Bytes = %q, %v; want %q", got, st, tc.want)
			}
		})
	}
}
