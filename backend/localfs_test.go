package backend

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestLocalFS(t *testing.T) {
	dir, alt := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "aa"), []byte("hello blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(alt, "bb"), []byte("alt"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l := &LocalFS{Dir: dir, AltDirs: []string{alt}}
	tests := []struct {
		id, want string
		notFound bool
		fail     bool
	}{
		{id: "aa", want: "hello blob"},
		{id: "bb", want: "alt"},
		{id: "cc", notFound: true},
		{id: "../aa", fail: true},
		{id: "..", fail: true},
		{id: "", fail: true},
		{id: "sub", fail: true},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			b, err := l.Open(ctx, tc.id)
			if tc.notFound {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("err = %v, want ErrNotFound", err)
				}
				return
			}
			if tc.fail {
				if err == nil {
					b.Close()
					t.Fatal("opened an invalid id")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.Size() != int64(len(tc.want)) {
				t.Fatalf("size %d", b.Size())
			}
			buf := make([]byte, len(tc.want)+3)
			n, err := b.ReadAt(ctx, buf, 0)
			if err != io.EOF || !bytes.Equal(buf[:n], []byte(tc.want)) {
				t.Fatalf("ReadAt = %q, %v", buf[:n], err)
			}
			if fb, ok := b.(FileBlob); !ok || fb.File() == nil {
				t.Fatal("localfs blob is not a FileBlob")
			}
		})
	}
	one := &LocalFS{BlobFile: filepath.Join(dir, "aa")}
	b, err := one.Open(ctx, "anything")
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Open(cctx, "aa"); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled open: %v", err)
	}
}
