package virtqueue

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// bufsOf splits data into buffers of the given sizes (copies).
func bufsOf(data []byte, sizes ...int) [][]byte {
	var out [][]byte
	for _, n := range sizes {
		out = append(out, append([]byte(nil), data[:n]...))
		data = data[n:]
	}
	return out
}

func TestCursor(t *testing.T) {
	data := []byte("0123456789abcdefghij")
	layouts := map[string][]int{
		"one":    {20},
		"split":  {3, 0, 7, 10},
		"bytes":  {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
		"uneven": {16, 4},
	}
	for name, sizes := range layouts {
		t.Run(name, func(t *testing.T) {
			c := NewCursor(bufsOf(data, sizes...))
			if c.Len() != 20 || BuffersLen(c.bufs) != 20 {
				t.Fatalf("Len %d", c.Len())
			}
			var hdr [4]byte
			if !ReadObj(&c, &hdr) || string(hdr[:]) != "0123" {
				t.Fatalf("ReadObj %q", hdr)
			}
			if n := c.Skip(2); n != 2 || c.Len() != 14 {
				t.Fatalf("Skip %d, Len %d", n, c.Len())
			}
			mid := c.Split(5)
			if mid.Len() != 5 || c.Len() != 9 {
				t.Fatalf("Split: %d and %d", mid.Len(), c.Len())
			}
			if got := bytes.Join(mid.Buffers(nil), nil); string(got) != "6789a" {
				t.Fatalf("Buffers %q", got)
			}
			p := make([]byte, 8)
			if n := mid.CopyOut(p); n != 5 || string(p[:n]) != "6789a" || mid.Len() != 0 {
				t.Fatalf("CopyOut past the split: %d %q", n, p[:n])
			}
			if n := c.CopyOut(p[:2]); n != 2 || string(p[:2]) != "bc" {
				t.Fatalf("CopyOut after the split: %q", p[:2])
			}
			if n := c.CopyIn([]byte("XY"), []byte("Zzzzzzzzzz")); n != 7 || c.Len() != 0 {
				t.Fatalf("CopyIn wrote %d, %d left", n, c.Len())
			}
			if n := c.Skip(1); n != 0 {
				t.Fatalf("Skip at the end: %d", n)
			}
		})
	}
}

func TestCursorContiguous(t *testing.T) {
	c := NewCursor([][]byte{make([]byte, 4), make([]byte, 8)})
	if _, ok := c.Contiguous(5); ok {
		t.Fatal("5 bytes across two buffers reported contiguous")
	}
	c.Skip(4)
	if b, ok := c.Contiguous(8); !ok || len(b) != 8 {
		t.Fatal("second buffer not contiguous")
	}
	if _, ok := c.Contiguous(9); ok {
		t.Fatal("more than is left reported contiguous")
	}
}

func TestCursorFillFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	content := []byte("the quick brown fox")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests := []struct {
		name      string
		off       int64
		n, room   int
		want      string
		wantAfter int
	}{
		{"middle", 4, 5, 32, "quick", 27},
		{"clipped by room", 0, 19, 9, "the quick", 0},
		{"end of file", 16, 10, 32, "fox", 29},
		{"past end", 40, 4, 32, "", 32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bufs := [][]byte{make([]byte, 2), make([]byte, 3), make([]byte, tc.room)}
			c := NewCursor(bufs)
			c = c.Split(tc.room)
			n, err := c.FillFromFile(int(f.Fd()), tc.off, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			got := bytes.Join(bufs, nil)[:n]
			if string(got) != tc.want || c.Len() != tc.wantAfter {
				t.Fatalf("read %q, %d left; want %q, %d", got, c.Len(), tc.want, tc.wantAfter)
			}
		})
	}
	c := NewCursor([][]byte{make([]byte, 8)})
	if _, err := c.FillFromFile(-1, 0, 8); err == nil {
		t.Fatal("bad fd: no error")
	}
}

func TestCursorFillAllocatesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 1<<16), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 4096)
	}
	var c Cursor
	allocs := testing.AllocsPerRun(50, func() {
		c.Reset(bufs)
		if n, err := c.FillFromFile(int(f.Fd()), 0, 1<<16); err != nil || n != 1<<16 {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per fill", allocs)
	}
}
