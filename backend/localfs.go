package backend

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LocalFS is nydusd's localfs backend: the blob with id X is the file
// Dir/X, or AltDirs[i]/X for the first alternative directory that has it.
// When BlobFile is set, every id opens that one file instead.
type LocalFS struct {
	Dir      string
	AltDirs  []string
	BlobFile string
}

// NewLocalFS returns a localfs backend over dir.
func NewLocalFS(dir string) *LocalFS { return &LocalFS{Dir: dir} }

// validID reports whether id can name a file in a blob directory: blob ids
// come from untrusted images and must never escape the directory.
func validID(id string) bool {
	if id == "" || id == "." || id == ".." || len(id) > 255 {
		return false
	}
	return !strings.ContainsAny(id, "/\\\x00")
}

// Open opens the blob named id.
func (l *LocalFS) Open(ctx context.Context, id string) (Blob, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if l.BlobFile != "" {
		return openFile(l.BlobFile)
	}
	if !validID(id) {
		return nil, fmt.Errorf("localfs: invalid blob id %q", id)
	}
	dirs := append([]string{l.Dir}, l.AltDirs...)
	for _, d := range dirs {
		if d == "" {
			continue
		}
		b, err := openFile(filepath.Join(d, id))
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("localfs: blob %s in %s: %w", id, strings.Join(dirs, ", "), ErrNotFound)
}

func openFile(path string) (*fileBlob, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("localfs: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("localfs: stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("localfs: %s is not a regular file", path)
	}
	return &fileBlob{f: f, size: st.Size()}, nil
}

// fileBlob is a blob in a local file.
type fileBlob struct {
	f    *os.File
	size int64
}

func (b *fileBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return b.f.ReadAt(p, off)
}

func (b *fileBlob) Size() int64    { return b.size }
func (b *fileBlob) File() *os.File { return b.f }
func (b *fileBlob) Close() error   { return b.f.Close() }
