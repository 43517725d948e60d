package rafs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/hostmount"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// layerTar is an OCI layer with every entry kind the reader must report.
func layerTar(t *testing.T) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mt := time.Unix(1700000000, 123456789)
	big := bytes.Repeat([]byte("0123456789abcdef"), 300000) // 4.8 MB: several chunks
	for _, h := range []struct {
		hdr  tar.Header
		data []byte
	}{
		{tar.Header{Name: "dir/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}, nil},
		{tar.Header{Name: "dir/file", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1001, ModTime: mt,
			PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v", "SCHILY.xattr.trusted.t": "\x01\x02"}}, []byte("hello\n")},
		{tar.Header{Name: "dir/big", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt}, big},
		{tar.Header{Name: "dir/hard", Typeflag: tar.TypeLink, Linkname: "dir/file", ModTime: mt}, nil},
		{tar.Header{Name: "dir/sym", Typeflag: tar.TypeSymlink, Linkname: "file", Mode: 0o777, ModTime: mt}, nil},
		{tar.Header{Name: "dir/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mt}, nil},
		{tar.Header{Name: "dir/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8, Devminor: 300, ModTime: mt}, nil},
		{tar.Header{Name: "dir/fifo", Typeflag: tar.TypeFifo, Mode: 0o600, ModTime: mt}, nil},
	} {
		h.hdr.Size = int64(len(h.data))
		h.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h.hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(h.data)
	}
	tw.Close()
	return b.Bytes()
}

func buildLayer(t *testing.T, opts builder.Options) (boot, dir string) {
	dir = t.TempDir()
	src := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(src, layerTar(t), 0o644); err != nil {
		t.Fatal(err)
	}
	boot = filepath.Join(dir, "image.boot")
	opts.Type = builder.TarRafs
	if _, err := builder.Build(context.Background(), src, boot, dir, opts); err != nil {
		t.Fatal(err)
	}
	return boot, dir
}

// TestBuilderRoundTrip builds the layer in several formats with the
// builder and reads it back through the kernel FUSE client.
func TestBuilderRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root for a direct FUSE mount")
	}
	for _, tc := range []struct {
		name string
		opts builder.Options
	}{
		{"v6-none", builder.Options{}},
		{"v6-zstd-sha256", builder.Options{Compressor: builder.CompressZstd, Digester: builder.DigestSHA256}},
		{"v5-lz4", builder.Options{FsVersion: 5, Compressor: builder.CompressLZ4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boot, dir := buildLayer(t, tc.opts)
			img, err := rafs.Open(boot, rafs.Options{Backend: backend.NewLocalFS(dir), DigestValidate: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if _, err := img.Check(context.Background(), rafs.CheckOptions{}); err != nil {
				t.Fatalf("check: %v", err)
			}
			mnt := t.TempDir()
			srv, err := hostmount.Mount(rafs.NewFS(img, rafs.FSOptions{}), mnt, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Unmount()
			cmd := exec.Command("stat", "-c", "%n %F %a %u %g %h %s %t:%T %Y", "dir/file", "dir/hard", "dir/null", "dir/sda", "dir/fifo", "dir/sym")
			cmd.Dir = mnt
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("stat: %v %s", err, out)
			}
			want := "dir/file regular file 640 1000 1001 2 6 0:0 1700000000\n" +
				"dir/hard regular file 640 1000 1001 2 6 0:0 1700000000\n" +
				"dir/null character special file 666 0 0 1 0 1:3 1700000000\n" +
				"dir/sda block special file 660 0 0 1 0 8:12c 1700000000\n" +
				"dir/fifo fifo 600 0 0 1 0 0:0 1700000000\n" +
				"dir/sym symbolic link 777 0 0 1 4 0:0 1700000000\n"
			if string(out) != want {
				t.Errorf("stat:\n%s\nwant\n%s", out, want)
			}
			cmd = exec.Command("sh", "-c", "stat -c %i dir/file dir/hard | uniq | wc -l; getfattr -h -d -m - -e hex dir/file; md5sum dir/big; readlink dir/sym")
			cmd.Dir = mnt
			out, err = cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v %s", err, out)
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), 300000)
			wantOut := "1\n# file: dir/file\ntrusted.t=0x0102\nuser.k=0x76\n\n" + md5(big) + "  dir/big\nfile\n"
			if string(out) != wantOut {
				t.Errorf("got:\n%s\nwant\n%s", out, wantOut)
			}
		})
	}
}

// TestZeroCopyAfterValidation: on an uncompressed v6 image with
// validation on, the first read of a chunk is checked (copied), later
// reads of it are fd segments.
func TestZeroCopyAfterValidation(t *testing.T) {
	boot, dir := buildLayer(t, builder.Options{})
	img, err := rafs.Open(boot, rafs.Options{Backend: backend.NewLocalFS(dir), DigestValidate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	fs := rafs.NewFS(img, rafs.FSOptions{})
	d, _ := img.Lookup(rafs.RootIno, "dir")
	n, _ := img.Lookup(d.Ino, "big")
	buf := make([]byte, 128<<10)
	in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: n.Ino}, Offset: 1 << 20, Size: uint32(len(buf))}
	res, st := fs.Read(nil, in, buf)
	if !st.Ok() {
		t.Fatal(st)
	}
	if _, seg := res.(fusewire.SegmentedResult); seg {
		t.Error("first read (not validated yet) returned segments")
	}
	first, _ := res.Bytes(make([]byte, len(buf)))
	first = bytes.Clone(first)
	res, st = fs.Read(nil, in, buf)
	if !st.Ok() {
		t.Fatal(st)
	}
	sr, seg := res.(fusewire.SegmentedResult)
	if !seg || len(sr.Segments()) != 1 {
		t.Fatalf("second read: %T, want one segment", res)
	}
	second, _ := res.Bytes(make([]byte, len(buf)))
	if !bytes.Equal(first, second) || !strings.HasPrefix(string(second), "0123456789abcdef") {
		t.Error("segment bytes differ from the validated copy")
	}
}
