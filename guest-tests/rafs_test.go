package guesttests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// This file serves RAFS images (issues 4 and 5, "In a guest") to real
// guests: the nydus fixtures and images rafs/builder makes from a special
// tree, through both command lines of the daemon, each checked from inside
// the guest against a manifest, with every write refused with EROFS.

// rafsBackends are our daemon serving an image, with virtiofsd's flags and
// with nydusd's ("virtiofs --sock ... --localfs-dir ...").
func rafsBackends(bin string) (virtiofsd, nydusd Backend) {
	return Template("go-rafs", []string{bin, "--socket-path={socket}", "--bootstrap={bootstrap}", "--blob-dir={blobdir}"}),
		Template("go-rafs-nydusd", []string{bin, "virtiofs", "--sock", "{socket}", "--bootstrap", "{bootstrap}",
			"--localfs-dir", "{blobdir}"})
}

func imageVars(bootstrap, blobDir string) map[string]string {
	return map[string]string{"bootstrap": bootstrap, "blobdir": blobDir}
}

// rafsDaemon builds the daemon into its own cache directory, so that
// another test's build cannot replace it under a running backend.
func rafsDaemon(t testing.TB) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(root, "guest-tests", ".cache", "rafs")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	daemon, err := DaemonBinary(root, cache)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return daemon
}

// makeRAFSTree is MakeSpecialTree (a small big file) plus what an image
// must also carry: user xattrs on files and directories (a long value
// too), a character and a block device.
func makeRAFSTree(dir string) error {
	if err := MakeSpecialTree(dir, 4); err != nil {
		return err
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"xattr on a file", func() error {
			return unix.Setxattr(filepath.Join(dir, "hello.txt"), "user.nvfs.tree", []byte("tree value"), 0)
		}},
		{"second xattr", func() error {
			return unix.Setxattr(filepath.Join(dir, "hello.txt"), "user.nvfs.second", []byte("ünïcødé ✓"), 0)
		}},
		{"long xattr", func() error {
			return unix.Setxattr(filepath.Join(dir, "medium.bin"), "user.nvfs.long", []byte(strings.Repeat("0123456789", 100)), 0)
		}},
		{"empty xattr", func() error {
			return unix.Setxattr(filepath.Join(dir, "empty"), "user.nvfs.empty", nil, 0)
		}},
		{"xattr on a directory", func() error {
			return unix.Setxattr(filepath.Join(dir, "hard"), "user.nvfs.dir", []byte("on a directory"), 0)
		}},
		{"xattr on a hard link", func() error {
			return unix.Setxattr(filepath.Join(dir, "hard", "a"), "user.nvfs.linked", []byte("shared by three names"), 0)
		}},
		{"devices dir", func() error { return os.Mkdir(filepath.Join(dir, "dev"), 0o755) }},
		{"char device", func() error {
			return unix.Mknod(filepath.Join(dir, "dev", "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
		}},
		{"block device", func() error {
			return unix.Mknod(filepath.Join(dir, "dev", "loop7"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 7)))
		}},
		{"device owner", func() error { return os.Lchown(filepath.Join(dir, "dev", "loop7"), 0, 6) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("rafs tree: %s: %w", s.what, err)
		}
	}
	return nil
}

// rafsImage is one image and what the guest must see in it.
type rafsImage struct {
	bootstrap, blobDir string
	want               *check.Manifest
	compare            check.CompareOptions // Xattrs for built images, IgnoreMtime for a manifest without mtimes
}

// v6Fixture is nydus's rafs-v6-2.2 image (zstd chunks, blake3, a blob with
// its ToC). Its manifest is written out from PROVENANCE.md, not read
// through our reader, and has no mtimes.
func v6Fixture(root string) rafsImage {
	dir := filepath.Join(root, "rafs", "testdata", "fixtures", "nydus", "v6-2.2")
	return rafsImage{
		bootstrap: filepath.Join(dir, "rafs-v6-2.2.boot"),
		blobDir:   dir,
		want: &check.Manifest{Entries: []check.Entry{
			{Path: ".", Type: check.TypeDir, Mode: 0o755, Nlink: 2},
			{Path: "lib.rs", Type: check.TypeFile, Mode: 0o644, Size: 16931, Nlink: 1, Sum: "4709cf8873e419ecedc7d43fdee4a75f"},
			{Path: "sync_io.rs", Type: check.TypeFile, Mode: 0o644, Size: 13400, Nlink: 1, Sum: "5442bc7dc9dc5f985c7594e23866ae6f"},
		}},
		compare: check.CompareOptions{IgnoreMtime: true},
	}
}

// v5Fixture is one of nydus's v5 "repeatable" images over the
// uncompressed blob in blobs/. Its .result file (tree -J and md5sum output)
// names every entry, type, symlink target and md5 but not modes or link
// counts, so the manifest comes from the image mounted on the host through
// our reader and the kernel's FUSE client, and is first checked against
// everything the .result file and PROVENANCE.md state.
func v5Fixture(t *testing.T, daemon, root, name string) rafsImage {
	t.Helper()
	dir := filepath.Join(root, "rafs", "testdata", "fixtures", "nydus", "v5-repeatable")
	img := rafsImage{bootstrap: filepath.Join(dir, name), blobDir: filepath.Join(dir, "blobs")}
	img.want = hostManifest(t, daemon, img.bootstrap, img.blobDir)
	types, targets, md5s, err := parseTreeResult(filepath.Join(dir, name+".result"))
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	seen := map[string]bool{}
	for _, e := range img.want.Entries {
		if e.Path == "." {
			continue
		}
		seen[e.Path] = true
		switch {
		case types[e.Path] != e.Type:
			errs = append(errs, fmt.Sprintf("%s: type %q, .result says %q", e.Path, e.Type, types[e.Path]))
		case e.Type == check.TypeSymlink && targets[e.Path] != e.Target:
			errs = append(errs, fmt.Sprintf("%s: target %q, .result says %q", e.Path, e.Target, targets[e.Path]))
		case e.Type == check.TypeFile && md5s[e.Path] != e.Sum:
			errs = append(errs, fmt.Sprintf("%s: md5 %s, .result says %s", e.Path, e.Sum, md5s[e.Path]))
		case e.UID != 0 || e.GID != 0:
			errs = append(errs, fmt.Sprintf("%s: owner %d:%d, want 0:0", e.Path, e.UID, e.GID))
		}
	}
	for p := range types {
		if !seen[p] {
			errs = append(errs, fmt.Sprintf("%s: in the .result tree, not in the image", p))
		}
	}
	if len(md5s) != 23 {
		errs = append(errs, fmt.Sprintf(".result lists %d md5s, PROVENANCE.md says 23", len(md5s)))
	}
	// PROVENANCE.md: three names, one inode, nlink 3
	first := ""
	for _, p := range []string{"hardlink-test/foo", "hardlink-test/test.sh", "normal-file-test/test.sh"} {
		e := entryOf(img.want, p)
		switch {
		case e == nil:
			errs = append(errs, p+": missing")
		case e.Nlink != 3 || e.Size != 944:
			errs = append(errs, fmt.Sprintf("%s: nlink %d size %d, want 3 and 944", p, e.Nlink, e.Size))
		case first == "":
			first = p
		case e.LinkOf != first:
			errs = append(errs, fmt.Sprintf("%s: same inode as %q, want %q", p, e.LinkOf, first))
		}
	}
	if len(errs) > 0 {
		t.Fatalf("%s through our reader on the host disagrees with the fixture's provenance:\n%s", name, strings.Join(errs, "\n"))
	}
	return img
}

func entryOf(m *check.Manifest, p string) *check.Entry {
	for i := range m.Entries {
		if m.Entries[i].Path == p {
			return &m.Entries[i]
		}
	}
	return nil
}

// hostManifest mounts an image on the host with the daemon's `fuse`
// subcommand (the kernel's FUSE client over our reader) and builds its
// manifest with checksums (so that the daemon's fuse command line is
// exercised too; check.Build would also work on an in-process mount).
func hostManifest(t *testing.T, daemon, bootstrap, blobDir string) *check.Manifest {
	t.Helper()
	mnt := t.TempDir()
	var before unix.Stat_t
	if err := unix.Stat(mnt, &before); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(daemon, "fuse", "--bootstrap", bootstrap, "--blob-dir", blobDir, "--mountpoint", mnt)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("nydus-virtiofsd fuse on %s: %v\n%s", bootstrap, err, out.String())
			}
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
			t.Errorf("nydus-virtiofsd fuse on %s did not exit on SIGTERM\n%s", bootstrap, out.String())
		}
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var st unix.Stat_t
		if err := unix.Stat(mnt, &st); err == nil && st.Dev != before.Dev {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("nydus-virtiofsd fuse on %s exited before mounting: %v\n%s", bootstrap, err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("nydus-virtiofsd fuse on %s: not mounted after 15s\n%s", bootstrap, out.String())
		}
	}
	m, _, err := check.Build(mnt, check.ManifestOptions{Hash: true})
	stop()
	if err != nil {
		t.Fatalf("manifest of %s on the host: %v", bootstrap, err)
	}
	return m
}

// parseTreeResult reads a nydus ".result" file: `tree -a -J -v` output and
// then `md5sum` lines, both with the mount path removed.
func parseTreeResult(p string) (types, targets, md5s map[string]string, err error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, nil, err
	}
	js, sums, ok := strings.Cut(string(b), "\n]\n")
	if !ok {
		return nil, nil, nil, fmt.Errorf("%s: no end of the tree JSON", p)
	}
	type node struct {
		Type     string `json:"type"`
		Name     string `json:"name"`
		Target   string `json:"target"`
		Contents []node `json:"contents"`
	}
	var top []node
	if err := json.Unmarshal([]byte(js+"\n]"), &top); err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	if len(top) == 0 || top[0].Type != "directory" {
		return nil, nil, nil, fmt.Errorf("%s: no root directory", p)
	}
	kinds := map[string]string{"directory": check.TypeDir, "file": check.TypeFile, "link": check.TypeSymlink}
	types, targets, md5s = map[string]string{}, map[string]string{}, map[string]string{}
	var walk func(dir string, ns []node)
	walk = func(dir string, ns []node) {
		for _, n := range ns {
			rel := path.Join(dir, n.Name)
			types[rel] = kinds[n.Type]
			if n.Type == "link" {
				targets[rel] = n.Target
				continue
			}
			walk(rel, n.Contents)
		}
	}
	walk("", top[0].Contents)
	sc := bufio.NewScanner(strings.NewReader(sums))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 {
			md5s[strings.TrimPrefix(f[1], "/")] = f[0]
		}
	}
	return types, targets, md5s, nil
}

// builtImage builds src with the builder into a new directory. With
// BlobInlineMeta the image is served from its blob alone.
func builtImage(t *testing.T, src string, want *check.Manifest, opts builder.Options) rafsImage {
	t.Helper()
	out := t.TempDir()
	boot, blobID, err := builder.BuildDir(src, out, opts)
	if err != nil {
		t.Fatalf("build %+v: %v", opts, err)
	}
	if opts.BlobInlineMeta {
		// served from the blob alone: --bootstrap names the blob
		boot = filepath.Join(out, blobID)
	}
	return rafsImage{bootstrap: boot, blobDir: out, want: want, compare: check.CompareOptions{Xattrs: true}}
}

// steps are the guest's checks of one image in one boot: the manifest with
// every byte (and mtimes with nanoseconds, device numbers, user xattrs for
// built images), every kind of write refused with EROFS, and the largest
// file read twice with all its pages still cached after close and reopen
// (the daemon answers OPEN of an immutable image with FOPEN_KEEP_CACHE).
func (img rafsImage) steps() []check.Step {
	largest := check.Entry{}
	for _, e := range img.want.Entries {
		if e.Type == check.TypeFile && e.Size > largest.Size {
			largest = e
		}
	}
	return []check.Step{
		{Name: "manifest", Kind: check.KindManifest, Manifest: img.want,
			Build:   check.ManifestOptions{Hash: true, Xattrs: img.compare.Xattrs},
			Compare: img.compare},
		readOnlyStep(img.want),
		{Name: "keepcache", Kind: check.KindReread, File: largest.Path, Reps: 2, Cache: check.CacheKept},
	}
}

// TestGuestRAFS serves RAFS images over virtio-fs and checks them inside
// the guest, one boot per row:
//   - nydus's fixtures: v6-2.2 (zstd, blake3, ToC) and both v5 repeatable
//     bootstraps over their uncompressed blob (sha256 and blake3);
//   - images rafs/builder makes from the special tree (unicode and
//     255-byte names, a path near PATH_MAX, symlinks of every kind, hard
//     links, empty and sparse files, a FIFO, devices, odd modes and owners,
//     user xattrs): v6 uncompressed, v6 zstd with 64 KiB chunks, v5 lz4
//     with sha256, and v6 zstd with the bootstrap inlined in the blob,
//     served from the blob alone. The guest must see exactly the source
//     tree's manifest (checksums, mtimes with nanoseconds, device numbers
//     and user xattrs included).
//
// Every boot also checks that writes (20 kinds) fail with EROFS and that
// the largest file's pages stay cached across close and reopen. The share
// is mounted read-write except in one row (the harness's ReadOnlyCheck,
// mounted "ro"), so every EROFS comes from the daemon, not from the
// guest's VFS. Rows alternate between the daemon's virtiofsd and
// nydusd command lines, and each boot must end with a clean umount and the
// daemon exiting 0 by itself.
func TestGuestRAFS(t *testing.T) {
	env := setupGuests(t)
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	daemon := rafsDaemon(t)
	viaVirtiofsd, viaNydusd := rafsBackends(daemon)

	src := filepath.Join(t.TempDir(), "tree")
	if err := makeRAFSTree(src); err != nil {
		t.Fatal(err)
	}
	want, _, err := check.Build(src, check.ManifestOptions{Hash: true, Xattrs: true})
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]rafsImage{
		"fixture-v6-2.2":       v6Fixture(root),
		"fixture-v5-sha256":    v5Fixture(t, daemon, root, "sha256-nocompress-repeatable"),
		"fixture-v5-blake3":    v5Fixture(t, daemon, root, "blake3-lz4_block-non_repeatable"),
		"built-v6-none":        builtImage(t, src, want, builder.Options{}),
		"built-v6-zstd-64k":    builtImage(t, src, want, builder.Options{Compressor: builder.CompressZstd, ChunkSize: 64 << 10}),
		"built-v5-lz4-sha256":  builtImage(t, src, want, builder.Options{FsVersion: 5, Compressor: builder.CompressLZ4, Digester: builder.DigestSHA256}),
		"built-v6-zstd-inline": builtImage(t, src, want, builder.Options{Compressor: builder.CompressZstd, BlobInlineMeta: true}),
	}
	rows := []struct {
		image   string
		backend Backend
		ro      bool // the harness's ReadOnlyCheck ("ro" mount)
	}{
		{"fixture-v6-2.2", viaVirtiofsd, false},
		{"fixture-v6-2.2", viaNydusd, true},
		{"fixture-v5-sha256", viaVirtiofsd, false},
		{"fixture-v5-blake3", viaNydusd, false},
		{"built-v6-none", viaVirtiofsd, false},
		{"built-v6-zstd-64k", viaNydusd, false},
		{"built-v5-lz4-sha256", viaVirtiofsd, false},
		{"built-v6-zstd-inline", viaNydusd, false},
	}
	for _, row := range rows {
		img := images[row.image]
		t.Run(row.image+"/"+row.backend.Name, func(t *testing.T) {
			serve := BackendConfig{Vars: imageVars(img.bootstrap, img.blobDir)}
			if row.ro {
				res, err := ReadOnlyCheck{
					Guest: env.guest, Backend: row.backend, Serve: serve, Want: img.want, Compare: img.compare,
					LogDir: logDir(t), Timeout: 120 * time.Second,
				}.Run(context.Background())
				if res != nil {
					logRun(t, res)
				}
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			steps := img.steps()
			res, err := Run(context.Background(), RunOptions{
				Guest: env.guest, Backend: row.backend, Serve: serve,
				Config: check.Config{Steps: steps},
				LogDir: logDir(t), Timeout: 120 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			logRun(t, res)
			if err := Verify(res, steps); err != nil {
				t.Errorf("%v\n%s", err, res.Tails(20))
			}
		})
	}
}
