package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/klauspost/compress/zstd"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// vfsCapNetBind is a valid security.capability value (vfs_cap_data
// revision 2, effective, CAP_NET_BIND_SERVICE permitted): the kernel
// refuses to return a malformed one.
const vfsCapNetBind = "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

// tarEntry is one entry of a generated layer.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

func dir(p string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: p, Mode: 0o755}}
}
func file(p string, data []byte, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data))}, data: data}
}

func tarBytes(t testing.TB, entries []tarEntry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.ModTime = time.Unix(1700000000, 0)
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layer makes a layer of the given compression from tar bytes.
func layer(t testing.TB, tb []byte, comp string) v1.Layer {
	var buf bytes.Buffer
	mt := types.OCIUncompressedLayer
	switch comp {
	case "gzip":
		zw := gzip.NewWriter(&buf)
		zw.Write(tb)
		zw.Close()
		mt = types.OCILayer
	case "zstd":
		zw, _ := zstd.NewWriter(&buf)
		zw.Write(tb)
		zw.Close()
		mt = types.OCILayerZStd
	default:
		buf.Write(tb)
	}
	return static.NewLayer(buf.Bytes(), mt)
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	r.Read(b)
	return b
}

// testLayers are three layers with every entry kind, real binaries
// (busybox-static when installed), deletions and an opaque directory.
func testLayers(t testing.TB) [][]tarEntry {
	r := rand.New(rand.NewSource(1))
	big := randBytes(r, 3<<20+12345)
	l1 := []tarEntry{
		dir("etc/"), dir("usr/"), dir("usr/bin/"), dir("data/"), dir("data/old/"), dir("dev/"),
		file("etc/hostname", []byte("nydus\n"), 0o644),
		file("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644),
		file("usr/bin/big", big, 0o755),
		file("data/old/a", randBytes(r, 5000), 0o600),
		file("data/old/b", []byte("bbb"), 0o640),
		file("gone", []byte("to be deleted"), 0o644),
		file("empty", nil, 0o644),
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/big-link", Linkname: "usr/bin/big"}},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/bin/sh", Linkname: "busybox", Mode: 0o777}},
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop0", Mode: 0o660, Devmajor: 7, Devminor: 0, Gid: 6}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o600}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/xattr", Mode: 0o644, Size: 2, Uid: 1000, Gid: 1000,
			PAXRecords: map[string]string{"SCHILY.xattr.user.foo": "bar", "SCHILY.xattr.security.capability": vfsCapNetBind}}, data: []byte("x\n")},
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		testenv.Skip(t, "busybox-static not installed (scripts/install-deps.sh)")
	}
	l1 = append(l1, file("usr/bin/busybox", bb, 0o755))
	l2 := []tarEntry{
		file(".wh.gone", nil, 0o644),
		dir("data/"), dir("data/old/"),
		file("data/old/.wh..wh..opq", nil, 0o644),
		file("data/old/c", []byte("new in an opaque dir"), 0o644),
		dir("etc/"),
		file("etc/hostname", []byte("converted\n"), 0o644),
		file("usr/bin/dup", big, 0o755), // same data as a lower file
	}
	l3 := []tarEntry{
		dir("srv/"),
		file("srv/random", randBytes(r, 2<<20), 0o644),
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "srv/random2", Linkname: "srv/random"}},
		dir("usr/"), dir("usr/bin/"),
		file("usr/bin/.wh.big-link", nil, 0o644),
	}
	l3 = append(l3, debianPackage(t, "erofs-utils", "fuse3")...)
	// No file data at all: a directory, a deletion, an empty file.
	l4 := []tarEntry{dir("srv/"), file("srv/.wh.random2", nil, 0o644), dir("newdir/"), file("newdir/empty", nil, 0o600)}
	return [][]tarEntry{l1, l2, l3, l4}
}

// debianPackage lists the installed files of Debian packages (dpkg -L)
// as layer entries: real binaries, manual pages, links.
func debianPackage(t testing.TB, pkgs ...string) []tarEntry {
	t.Helper()
	var out []tarEntry
	seen := map[string]bool{}
	for _, pkg := range pkgs {
		list, err := exec.Command("dpkg", "-L", pkg).Output()
		if err != nil {
			testenv.Skipf(t, "Debian package %s not installed (scripts/install-deps.sh): %v", pkg, err)
		}
		for _, p := range strings.Split(strings.TrimSpace(string(list)), "\n") {
			if p == "/." || seen[p] {
				continue
			}
			seen[p] = true
			st, err := os.Lstat(p)
			if err != nil {
				continue // diverted or removed
			}
			// Merged /usr: /bin, /lib... are links to directories; keep
			// the /usr paths only.
			if d, err := filepath.EvalSymlinks(filepath.Dir(p)); err != nil || d != filepath.Dir(p) {
				continue
			}
			if st.Mode()&os.ModeSymlink != 0 {
				if tst, err := os.Stat(p); err == nil && tst.IsDir() {
					continue
				}
			}
			h, err := tar.FileInfoHeader(st, "")
			if err != nil {
				t.Fatal(err)
			}
			h.Name, h.Uname, h.Gname = p[1:], "", ""
			e := tarEntry{hdr: *h}
			switch {
			case st.Mode()&os.ModeSymlink != 0:
				if e.hdr.Linkname, err = os.Readlink(p); err != nil {
					t.Fatal(err)
				}
			case st.Mode().IsRegular():
				if e.data, err = os.ReadFile(p); err != nil {
					t.Fatal(err)
				}
			case !st.IsDir():
				continue
			}
			out = append(out, e)
		}
	}
	return out
}

// pushSource builds an OCI image of the test layers (gzip, zstd,
// uncompressed) and pushes it with go-containerregistry's remote package.
func pushSource(t testing.TB, ref string, platform *v1.Platform) (v1.Image, v1.Hash) {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	comps := []string{"gzip", "zstd", "none", "gzip"}
	for i, l := range testLayers(t) {
		var err error
		img, err = mutate.Append(img, mutate.Addendum{Layer: layer(t, tarBytes(t, l), comps[i]),
			History: v1.History{CreatedBy: "test layer " + comps[i]}})
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Entrypoint = []string{"/usr/bin/sh"}
	cfg.Config.Env = []string{"PATH=/usr/bin"}
	cfg.Config.WorkingDir = "/srv"
	if platform != nil {
		cfg.OS, cfg.Architecture = platform.OS, platform.Architecture
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return img, d
}

func checkTarget(t *testing.T, target, source string) *CheckReport {
	t.Helper()
	rep, err := Check(context.Background(), CheckOptions{Target: target, Source: source, PlainHTTP: true})
	if err != nil {
		t.Fatalf("check %s: %v", target, err)
	}
	if !rep.OK() {
		t.Fatalf("check %s: %d problems:\n%s", target, len(rep.Problems), strings.Join(rep.Problems, "\n"))
	}
	if source != "" && !strings.HasPrefix(rep.Filesystem, "FUSE mount") {
		testenv.Skipf(t, "the filesystem rule could not mount through FUSE: %s", rep.Filesystem)
	}
	return rep
}

// TestConvertRegistry converts an image with every entry kind through
// Debian's docker-registry, for RAFS v6 and v5 and each compressor, checks
// the result with Check (manifest, bootstrap and filesystem rules against
// go-containerregistry's flattening of the source), converts it again
// (every layer from the cache, nothing uploaded) and into a second
// repository (blobs mounted, not uploaded).
func TestConvertRegistry(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	src := reg + "/src/app:v1"
	pushSource(t, src, nil)
	cases := []struct {
		name string
		fsv  int
		comp string
	}{
		{"v6-zstd", 6, "zstd"}, {"v6-lz4", 6, "lz4_block"}, {"v6-none", 6, "none"}, {"v5-zstd", 5, "zstd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cache := t.TempDir()
			target := reg + "/dst/app:" + tc.name
			o := Options{Source: src, Target: target, PlainHTTP: true, FsVersion: tc.fsv, Compressor: tc.comp, CacheDir: cache}
			sum, err := Convert(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if len(sum.Images) != 1 || len(sum.Images[0].Layers) != 4 {
				t.Fatalf("summary: %+v", sum)
			}
			for _, l := range sum.Images[0].Layers {
				if l.Cached || !l.Uploaded {
					t.Errorf("first conversion: layer %+v cached or not uploaded", l)
				}
			}
			rep := checkTarget(t, target, src)
			if rep.FilesCompared < 20 {
				t.Errorf("filesystem rule compared %d paths", rep.FilesCompared)
			}
			convertAgain(t, o, sum)
			// Another repository of the same registry: mounted, not uploaded.
			o.Target = reg + "/other/app:" + tc.name
			sum3, err := Convert(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range sum3.Images[0].Layers {
				if l.Uploaded {
					t.Errorf("other repository: layer %+v uploaded, not mounted", l)
				}
			}
			checkTarget(t, o.Target, src)
		})
	}
}

// pullImage is the image at ref in the plain-HTTP test registry.
func pullImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, _ := name.ParseReference(ref, name.Insecure)
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// convertAgain converts o a second time: the same manifest, every layer
// from the cache, every blob already where it goes.
func convertAgain(t *testing.T, o Options, first *Summary) {
	t.Helper()
	sum, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if sum.TargetDigest != first.TargetDigest {
		t.Errorf("second conversion made %s, first %s", sum.TargetDigest, first.TargetDigest)
	}
	for _, l := range sum.Images[0].Layers {
		if !l.Cached || l.Uploaded {
			t.Errorf("second conversion: layer %+v not cached or uploaded again", l)
		}
	}
}

// TestConvertManifestLayout checks the manifest, config and bootstrap layer
// field by field against the Nydus image layout.
func TestConvertManifestLayout(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	src := reg + "/src/app:v1"
	srcImg, srcDigest := pushSource(t, src, nil)
	target := reg + "/dst/app:layout"
	if _, err := Convert(context.Background(), Options{Source: src, Target: target, PlainHTTP: true, CacheDir: t.TempDir(), WithReferrer: true}); err != nil {
		t.Fatal(err)
	}
	img := pullImage(t, target)
	m, _ := img.Manifest()
	if m.MediaType != types.OCIManifestSchema1 || len(m.Layers) != 5 {
		t.Fatalf("manifest: %s with %d layers", m.MediaType, len(m.Layers))
	}
	want := map[string]string{AnnotationSourceDigest: srcDigest.String(), AnnotationSourceRef: src, AnnotationFsVersion: "6"}
	for k, v := range want {
		if m.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, m.Annotations[k], v)
		}
	}
	if m.Subject == nil || m.Subject.Digest != srcDigest || m.Subject.Platform != nil {
		t.Errorf("subject %+v", m.Subject)
	}
	last := m.Layers[4]
	if last.MediaType != types.OCILayer || last.Annotations[AnnotationNydusBootstrap] != "true" || last.Annotations[AnnotationFsVersion] != "6" {
		t.Errorf("bootstrap layer descriptor %+v", last)
	}
	// Bootstrap layer: image/, image/image.boot 0444, then a blob.meta per layer.
	ls, _ := img.Layers()
	rc, _ := ls[4].Compressed()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == BootstrapPath && h.Mode != 0o444 {
			t.Errorf("image.boot mode %o", h.Mode)
		}
	}
	rc.Close()
	// A blob.meta for each layer with file data (the last source layer has none).
	if len(names) != 5 || names[0] != "image/" || names[1] != BootstrapPath {
		t.Errorf("bootstrap layer entries %v", names)
	}
	for i, l := range m.Layers[:3] {
		if names[2+i] != "image/"+l.Digest.Hex+".blob.meta" {
			t.Errorf("entry %d is %s, want the blob.meta of %s", 2+i, names[2+i], l.Digest)
		}
	}
	cfg, _ := img.ConfigFile()
	scfg, _ := srcImg.ConfigFile()
	if len(cfg.History) != len(scfg.History)+1 {
		t.Errorf("history: %d entries, source %d", len(cfg.History), len(scfg.History))
	}
	a, _ := json.Marshal(cfg.Config)
	b, _ := json.Marshal(scfg.Config)
	if !bytes.Equal(a, b) {
		t.Errorf("config.config %s, source %s", a, b)
	}
}

// TestConvertMultiPlatform converts a two-platform index: --all-platforms
// gives an index of Nydus manifests, --merge-platform one holding the
// source manifests too, and a single --platform collapses to a manifest.
func TestConvertMultiPlatform(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	amd, _ := pushSource(t, reg+"/src/multi:amd64", &v1.Platform{OS: "linux", Architecture: "amd64"})
	arm, _ := pushSource(t, reg+"/src/multi:arm64", &v1.Platform{OS: "linux", Architecture: "arm64"})
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	src := reg + "/src/multi:v1"
	r, _ := name.ParseReference(src, name.Insecure)
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	for _, tc := range []struct {
		name      string
		o         Options
		manifests int
		mt        types.MediaType
	}{
		{"all", Options{AllPlatforms: true}, 2, types.OCIImageIndex},
		{"merge", Options{AllPlatforms: true, MergePlatform: true}, 4, types.OCIImageIndex},
		{"one", Options{Platform: "linux/arm64"}, 0, types.OCIManifestSchema1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Source, o.Target, o.PlainHTTP, o.CacheDir = src, reg+"/dst/multi:"+tc.name, true, cache
			sum, err := Convert(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if types.MediaType(sum.MediaType) != tc.mt {
				t.Fatalf("target media type %s, want %s", sum.MediaType, tc.mt)
			}
			if tc.manifests > 0 {
				tr, _ := name.ParseReference(o.Target, name.Insecure)
				ti, err := remote.Index(tr)
				if err != nil {
					t.Fatal(err)
				}
				im, _ := ti.IndexManifest()
				if len(im.Manifests) != tc.manifests {
					t.Fatalf("%d manifests, want %d", len(im.Manifests), tc.manifests)
				}
				if tc.o.MergePlatform && (isNydusEntry(im.Manifests[0]) || !isNydusEntry(im.Manifests[3]) || im.Manifests[3].ArtifactType != MediaTypeNydusManifest) {
					t.Errorf("merged index entries %+v", im.Manifests)
				}
			}
			rep := checkTarget(t, o.Target, src)
			if want := max(1, tc.manifests/(map[bool]int{true: 2, false: 1}[tc.o.MergePlatform])); len(rep.Manifests) != want {
				t.Errorf("check looked at %d manifests, want %d", len(rep.Manifests), want)
			}
		})
	}
}

// TestConvertSources converts the same image from an OCI image layout
// directory and from a docker save archive.
func TestConvertSources(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	src := reg + "/src/app:v1"
	img, _ := pushSource(t, src, nil)
	dir := t.TempDir()
	archive := filepath.Join(dir, "image.tar")
	tag, _ := name.NewTag("example.com/app:v1")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(dir, "layout")
	writeLayout(t, layoutDir, img)
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"archive", Options{Source: archive, SourceArchive: true}},
		{"layout", Options{Source: layoutDir, SourceLayout: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Target, o.PlainHTTP, o.CacheDir = reg+"/dst/app:"+tc.name, true, t.TempDir()
			if _, err := Convert(context.Background(), o); err != nil {
				t.Fatal(err)
			}
			checkTarget(t, o.Target, src)
		})
	}
}

// TestConvertBasicAuthDocker converts a Docker-typed image (schema2
// manifest) between repositories of a registry with Basic auth, the
// credentials coming from a Docker config file (DOCKER_CONFIG), as every
// registry tool reads them; the output keeps Docker media types (and --oci
// switches to OCI ones).
func TestConvertBasicAuthDocker(t *testing.T) {
	r := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
	cfgDir := t.TempDir()
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, r.Host, r.AuthB64())
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", cfgDir)

	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	for _, l := range testLayers(t) {
		var err error
		if img, err = mutate.AppendLayers(img, static.NewLayer(gzipBytes(tarBytes(t, l)), types.DockerLayer)); err != nil {
			t.Fatal(err)
		}
	}
	src := r.Host + "/src/docker:v1"
	sref, _ := name.ParseReference(src, name.Insecure)
	if err := remote.Write(sref, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		t.Fatal(err)
	}
	// Without credentials the registry refuses.
	t.Run("no-credentials", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", t.TempDir())
		_, err := Convert(context.Background(), Options{Source: src, Target: r.Host + "/dst/docker:none", PlainHTTP: true, CacheDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), src) {
			t.Fatalf("conversion without credentials: %v", err)
		}
	})
	for _, tc := range []struct {
		name string
		oci  bool
		mt   types.MediaType
		boot types.MediaType
	}{
		{"docker", false, types.DockerManifestSchema2, types.DockerLayer},
		{"oci", true, types.OCIManifestSchema1, types.OCILayer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := r.Host + "/dst/docker:" + tc.name
			sum, err := Convert(context.Background(), Options{Source: src, Target: target, PlainHTTP: true, OCI: tc.oci, CacheDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if types.MediaType(sum.MediaType) != tc.mt {
				t.Errorf("media type %s, want %s", sum.MediaType, tc.mt)
			}
			tref, _ := name.ParseReference(target, name.Insecure)
			out, err := remote.Image(tref, remote.WithAuthFromKeychain(authn.DefaultKeychain))
			if err != nil {
				t.Fatal(err)
			}
			m, _ := out.Manifest()
			if got := m.Layers[len(m.Layers)-1].MediaType; got != tc.boot {
				t.Errorf("bootstrap layer media type %s, want %s", got, tc.boot)
			}
			checkTarget(t, target, src)
		})
	}
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}
