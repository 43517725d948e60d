package passthrough

import (
	"os"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
)

// TestReadOnlyCloseSendsNoFlush: through the real Linux FUSE client, closing
// a file opened read-only sends no FLUSH (the open answered FOPEN_NOFLUSH),
// while closing one opened for writing still does, so the host sees it.
func TestReadOnlyCloseSendsNoFlush(t *testing.T) {
	var flushes *fuseclient.FlushCounter
	e := mountEnvWrapped(t, Options{}, func(fs fuse.RawFileSystem) fuse.RawFileSystem {
		flushes = fuseclient.CountFlushes(fs)
		return flushes
	})
	if err := os.WriteFile(e.host("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		flags int
		want  bool // FLUSH sent at close
	}{
		{"read-only", os.O_RDONLY, false},
		{"write-only", os.O_WRONLY, true},
		{"read-write", os.O_RDWR, true},
		{"append", os.O_WRONLY | os.O_APPEND, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := flushes.N.Load()
			for range 3 {
				f, err := os.OpenFile(e.via("f"), tc.flags, 0)
				if err != nil {
					t.Fatal(err)
				}
				if tc.flags == os.O_RDONLY {
					b := make([]byte, 8)
					if n, err := f.Read(b); err != nil || string(b[:n]) != "data" {
						t.Fatalf("read %q, %v", b[:n], err)
					}
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}
			got := flushes.N.Load() - before
			if tc.want && got < 3 {
				t.Errorf("%d FLUSH for 3 closes, want one each", got)
			}
			if !tc.want && got != 0 {
				t.Errorf("%d FLUSH for 3 read-only closes, want none", got)
			}
		})
	}
}
