package guesttests

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/convert"
)

// DebLayer is one image layer made of Debian packages (unpacked with
// dpkg-deb -x, as a container image build would install them, without
// maintainer scripts) plus extra files.
type DebLayer struct {
	Packages []string
	Files    map[string]string // path in the layer -> content (mode 0755 if it starts with "#!")
	Symlinks map[string]string // path -> target
}

// BuildDebLayer downloads the packages into debDir (cached by version)
// and writes the layer's tree to dir.
func BuildDebLayer(ctx context.Context, debDir, dir string, l DebLayer, log logrus.FieldLogger) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range l.Packages {
		deb, _, err := fetchDeb(ctx, debDir, p, log)
		if err != nil {
			return err
		}
		if _, err := runOut(ctx, "dpkg-deb", "-x", deb, dir); err != nil {
			return err
		}
	}
	for p, c := range l.Files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(c, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(c), mode); err != nil {
			return err
		}
	}
	for p, target := range l.Symlinks {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		_ = os.Remove(full)
		if err := os.Symlink(target, full); err != nil {
			return err
		}
	}
	return nil
}

// dirLayer packs dir as an OCI layer (gzip'd tar, root-owned entries).
func dirLayer(ctx context.Context, dir, tarPath string) (v1.Layer, error) {
	cmd := exec.CommandContext(ctx, "tar", "--numeric-owner", "--owner=0", "--group=0", "--sort=name",
		"--mtime=@0", "-C", dir, "-cf", tarPath, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tar %s: %w\n%s", dir, err, out)
	}
	return tarball.LayerFromFile(tarPath)
}

// staticKeychain answers every registry with one authenticator.
type staticKeychain struct{ a authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }

// PushDebImage builds an OCI image of the layers (work files under work)
// and pushes it to ref (plain HTTP). It returns the layers' digests.
func PushDebImage(ctx context.Context, ref string, layers []string, cmd []string, auth authn.Authenticator, work string) ([]v1.Hash, error) {
	var ls []v1.Layer
	for i, dir := range layers {
		l, err := dirLayer(ctx, dir, filepath.Join(work, fmt.Sprintf("%s-%d.tar", filepath.Base(dir), i)))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = cmd
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(r, img, remote.WithAuth(auth), remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}
	var ds []v1.Hash
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// NydusImage is what a snapshotter keeps of a converted image: the
// bootstrap on the host and the ids of the blobs it reads from the
// registry, with their sizes.
type NydusImage struct {
	Bootstrap string
	Blobs     map[string]int64 // blob id (sha256 hex) -> compressed size
}

// ConvertAndFetchBootstrap converts src into target with package convert
// and unpacks the target's bootstrap layer into dir/image.boot, as
// nydus-snapshotter does before it hands the image to the runtime.
func ConvertAndFetchBootstrap(ctx context.Context, src, target string, auth authn.Authenticator, cacheDir, dir string) (*NydusImage, error) {
	if _, err := convert.Convert(ctx, convert.Options{Source: src, Target: target, PlainHTTP: true,
		Keychain: staticKeychain{auth}, CacheDir: cacheDir}); err != nil {
		return nil, fmt.Errorf("convert %s: %w", src, err)
	}
	r, err := name.ParseReference(target, name.Insecure)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(r, remote.WithAuth(auth), remote.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	out := &NydusImage{Blobs: map[string]int64{}, Bootstrap: filepath.Join(dir, "image.boot")}
	var boot *v1.Descriptor
	for i, l := range m.Layers {
		if l.Annotations[convert.AnnotationNydusBootstrap] == "true" {
			boot = &m.Layers[i]
			continue
		}
		out.Blobs[l.Digest.Hex] = l.Size
	}
	if boot == nil {
		return nil, fmt.Errorf("%s: no bootstrap layer", target)
	}
	l, err := img.LayerByDigest(boot.Digest)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: bootstrap layer without %s", target, convert.BootstrapPath)
		}
		if err != nil {
			return nil, err
		}
		if strings.TrimPrefix(h.Name, "./") != convert.BootstrapPath {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		f, err := os.Create(out.Bootstrap)
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// KataImages are the images the Kata guest test, the demo and the
// cold-start benchmark use, by tag; every one starts with the same base
// layer (libc6 and a static busybox as /bin/sh).
var kataImageSpecs = map[string]struct {
	layers []string
	cmd    []string
}{
	"py":    {[]string{"base", "python", "app"}, []string{"/usr/bin/python3.11", "/app/main.py"}},
	"hello": {[]string{"base", "hello"}, []string{"/usr/bin/hello"}},
	"jre":   {[]string{"base", "jre"}, []string{JavaPath, "-version"}},
}

// JavaPath is the java launcher of the "jre" image (the /usr/bin/java
// alternative is made by a maintainer script, which an unpacked image
// does not run).
const JavaPath = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"

// KataImageCmd is the program the tagged image runs (its config's Cmd).
func KataImageCmd(tag string) []string { return kataImageSpecs[tag].cmd }

var kataLayers = map[string]DebLayer{
	"base": {Packages: []string{"libc6", "busybox-static"},
		Symlinks: map[string]string{"bin/sh": "busybox"}},
	"python": {Packages: []string{"python3.11-minimal", "libpython3.11-minimal", "zlib1g", "libexpat1"}},
	"app":    {Files: map[string]string{"app/main.py": kataPyMain, "app/reader.py": kataPyReader}},
	"hello":  {Packages: []string{"hello"}},
	"jre":    {Packages: []string{"openjdk-17-jre-headless", "libstdc++6", "libgcc-s1", "zlib1g"}},
}

// BuildKataImages builds the tagged images from Debian packages (cached
// in guest-tests/.cache/debs), pushes them as OCI images to host/repo:TAG,
// converts each to host/repo:TAG-nydus with package convert and unpacks
// its bootstrap under work, as nydus-snapshotter would.
func BuildKataImages(ctx context.Context, host, repo string, auth authn.Authenticator, work string, tags ...string) (map[string]*NydusImage, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	debs := filepath.Join(root, "guest-tests", ".cache", "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	log := logrus.StandardLogger()
	built := map[string]bool{}
	out := map[string]*NydusImage{}
	for _, tag := range tags {
		spec, ok := kataImageSpecs[tag]
		if !ok {
			return nil, fmt.Errorf("no image %q", tag)
		}
		var dirs []string
		for _, l := range spec.layers {
			dir := filepath.Join(work, "layer-"+l)
			if !built[l] {
				if err := BuildDebLayer(ctx, debs, dir, kataLayers[l], log); err != nil {
					return nil, err
				}
				built[l] = true
			}
			dirs = append(dirs, dir)
		}
		src := host + "/" + repo + ":" + tag
		if _, err := PushDebImage(ctx, src, dirs, spec.cmd, auth, work); err != nil {
			return nil, err
		}
		ni, err := ConvertAndFetchBootstrap(ctx, src, src+"-nydus", auth, filepath.Join(work, "convert-cache"), filepath.Join(work, "snap-"+tag))
		if err != nil {
			return nil, err
		}
		out[tag] = ni
	}
	return out, nil
}

const kataPyMain = `import os, sys
print("PY-FIRST-LINE python", sys.version.split()[0], flush=True)
n = 0
for d, _, fs in os.walk("/usr/lib/python3.11/encodings"):
    n += len(fs)
with open("/out.txt", "w") as f:
    f.write("written by the container\n")
print("PY-DONE files=%d" % n, flush=True)
`

// kataPyReader keeps reading the image for a few seconds (while the host
// unmounts the other container's image).
const kataPyReader = `import os, sys, time
end = time.time() + float(sys.argv[1])
rounds = 0
total = 0
while time.time() < end:
    for d, _, fs in os.walk("/usr/lib/python3.11"):
        for f in fs:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    total += len(fh.read())
    rounds += 1
print("READER-OK rounds=%d bytes=%d" % (rounds, total), flush=True)
`
