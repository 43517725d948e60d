package guesttests

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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
	// Resolve are packages installed with their whole dependency closure
	// (without recommends), as `apt-get install --no-install-recommends`
	// would into an empty root: apt resolves it against an empty dpkg
	// status, at the versions of the machine's apt lists.
	Resolve []string
	// PyCompile are directories of the layer whose Python modules are
	// byte-compiled at build time, as the packages' maintainer scripts
	// (py3compile) would at install (unchecked-hash .pyc files: the layer's
	// tar gives every file one mtime).
	PyCompile []string
	// Over names the kataLayers layer this one is stacked on: packages of
	// Resolve's closure that layer already unpacks (same name and
	// version) are left out, as apt would leave them installed.
	Over     string
	Files    map[string]string // path in the layer -> content (mode 0755 if it starts with "#!")
	Symlinks map[string]string // path -> target
}

// debFile is one downloaded package.
type debFile struct{ name, version, path string }

// resolveDebs downloads the layer's packages into debDir (cached by
// version) and returns them in install order.
func resolveDebs(ctx context.Context, debDir string, l DebLayer, log logrus.FieldLogger) ([]debFile, error) {
	var out []debFile
	for _, p := range l.Packages {
		deb, ver, err := fetchDeb(ctx, debDir, p, log)
		if err != nil {
			return nil, err
		}
		out = append(out, debFile{p, ver, deb})
	}
	if len(l.Resolve) == 0 {
		return out, nil
	}
	closure, err := aptClosure(ctx, debDir, l.Resolve)
	if err != nil {
		return nil, err
	}
	var missing []string
	for i, d := range closure {
		if closure[i].path = findDeb(debDir, d.name, d.version); closure[i].path == "" {
			missing = append(missing, d.name+"="+d.version)
		}
	}
	if len(missing) > 0 {
		log.Infof("guest: downloading %d packages", len(missing))
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"-q", "-o", "APT::Sandbox::User=root", "download"}, missing...)...)
		cmd.Dir = debDir
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get download: %w\n%s", err, b)
		}
		for i, d := range closure {
			if closure[i].path = findDeb(debDir, d.name, d.version); closure[i].path == "" {
				return nil, fmt.Errorf("apt-get download %s=%s left no matching .deb in %s", d.name, d.version, debDir)
			}
		}
	}
	return append(out, closure...), nil
}

// aptClosure asks apt which packages (name, version) installing pkgs
// into an empty root would unpack.
func aptClosure(ctx context.Context, debDir string, pkgs []string) ([]debFile, error) {
	status := filepath.Join(debDir, ".empty-dpkg-status")
	if err := os.WriteFile(status, nil, 0o644); err != nil {
		return nil, err
	}
	args := append([]string{"-s", "-o", "Dir::State::status=" + status, "-o", "APT::Install-Recommends=0", "install"}, pkgs...)
	out, err := runOut(ctx, "apt-get", args...)
	if err != nil {
		// no package lists yet (a fresh machine)
		if err = aptUpdate(ctx); err == nil {
			out, err = runOut(ctx, "apt-get", args...)
		}
	}
	if err != nil {
		return nil, err
	}
	var ds []debFile
	for _, line := range strings.Split(out, "\n") {
		// Inst NAME (VERSION SUITE [ARCH])
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "Inst" && strings.HasPrefix(f[2], "(") {
			ds = append(ds, debFile{name: f[1], version: strings.TrimPrefix(f[2], "(")})
		}
	}
	if len(ds) == 0 {
		return nil, fmt.Errorf("apt-get %s: no package to install", strings.Join(args, " "))
	}
	return ds, nil
}

// findDeb returns the .deb apt-get download left for name at version
// (NAME_VERSION_ARCH.deb, the epoch's ':' written %3a), or "".
func findDeb(dir, name, version string) string {
	ms, _ := filepath.Glob(filepath.Join(dir, name+"_"+strings.ReplaceAll(version, ":", "%3a")+"_*.deb"))
	if len(ms) == 0 {
		return ""
	}
	return ms[0]
}

// BuildDebLayer downloads the packages into debDir (cached by version)
// and writes the layer's tree to dir.
func BuildDebLayer(ctx context.Context, debDir, dir string, l DebLayer, log logrus.FieldLogger) error {
	debs, err := resolveDebs(ctx, debDir, l, log)
	if err != nil {
		return err
	}
	return writeDebLayer(ctx, debs, dir, l)
}

func writeDebLayer(ctx context.Context, debs []debFile, dir string, l DebLayer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range debs {
		if _, err := runOut(ctx, "dpkg-deb", "-x", d.path, dir); err != nil {
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
	for _, p := range l.PyCompile {
		if _, err := runOut(ctx, "python3", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
			"-s", dir, "-p", "/", filepath.Join(dir, p)); err != nil {
			return fmt.Errorf("byte-compiling %s: %w", p, err)
		}
	}
	return nil
}

// layerKey digests everything a layer is built from.
func layerKey(debs []debFile, l DebLayer) string {
	h := sha256.New()
	for _, d := range debs {
		fmt.Fprintf(h, "deb %s=%s\n", d.name, d.version)
	}
	for _, k := range sortedKeys(l.Files) {
		fmt.Fprintf(h, "file %q %q\n", k, l.Files[k])
	}
	for _, k := range sortedKeys(l.Symlinks) {
		fmt.Fprintf(h, "symlink %q %q\n", k, l.Symlinks[k])
	}
	fmt.Fprintf(h, "pycompile %q\n", l.PyCompile)
	return hex.EncodeToString(h.Sum(nil))
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// dirLayer packs dir as an OCI layer (gzip'd tar, root-owned entries).
// The gzip'd bytes are kept in memory once made: its digest and its push
// would otherwise compress the tar twice.
func dirLayer(ctx context.Context, dir, tarPath string) (v1.Layer, error) {
	cmd := exec.CommandContext(ctx, "tar", "--numeric-owner", "--owner=0", "--group=0", "--sort=name",
		"--mtime=@0", "-C", dir, "-cf", tarPath, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tar %s: %w\n%s", dir, err, out)
	}
	return tarball.LayerFromFile(tarPath, tarball.WithCompressedCaching)
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
// registry, with their sizes. Tag is the OCI image's tag in the
// repository (the Nydus image is Tag-nydus).
type NydusImage struct {
	Bootstrap string
	Blobs     map[string]int64 // blob id (sha256 hex) -> compressed size
	Tag       string
}

// ConvertAndFetchBootstrap converts src into target with package convert
// and unpacks the target's bootstrap layer into dir/image.boot, as
// nydus-snapshotter does before it hands the image to the runtime.
func ConvertAndFetchBootstrap(ctx context.Context, src, target string, auth authn.Authenticator, cacheDir, dir string) (*NydusImage, error) {
	if _, err := convert.Convert(ctx, convert.Options{Source: src, Target: target, PlainHTTP: true,
		Keychain: staticKeychain{auth}, CacheDir: cacheDir}); err != nil {
		return nil, fmt.Errorf("convert %s: %w", src, err)
	}
	return FetchBootstrap(ctx, target, auth, dir)
}

// FetchBootstrap reads the Nydus image target's manifest and unpacks its
// bootstrap layer into dir/image.boot.
func FetchBootstrap(ctx context.Context, target string, auth authn.Authenticator, dir string) (*NydusImage, error) {
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
// layer (libc6 and a static busybox as /bin/sh). "ml" (about 2.3 GiB
// unpacked) is for the benchmark only: no test builds it.
var kataImageSpecs = map[string]struct {
	layers []string
	cmd    []string
}{
	"py":    {[]string{"base", "python", "app"}, []string{"/usr/bin/python3.11", "/app/main.py"}},
	"hello": {[]string{"base", "hello"}, []string{"/usr/bin/hello"}},
	"jre":   {[]string{"base", "jre"}, []string{JavaPath, "-version"}},
	"ml":    {[]string{"base", "mlstack", "mlapp"}, []string{"/usr/bin/python3", "/app/first.py"}},
	// ds, the data-science notebook, is ml plus R and the rest of
	// what such notebook images carry (about 4.4 GiB unpacked); its
	// program is ml's (the image's main entry is Jupyter's Python kernel).
	"ds": {[]string{"base", "mlstack", "dsstack", "mlapp"}, []string{"/usr/bin/python3", "/app/first.py"}},
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
	// mlstack is a Debian counterpart of the Jupyter pytorch/scipy
	// notebook images: PyTorch, scikit-learn, SciPy, pandas and their
	// usual company, Jupyter, and the compiler toolchain such images ship
	// for building extensions.
	"mlstack": {Resolve: mlStackPackages,
		PyCompile: []string{"usr/lib/python3.11", "usr/lib/python3/dist-packages"},
		// the BLAS/LAPACK alternatives libopenblas0-pthread's maintainer
		// script would register (highest priority)
		Symlinks: map[string]string{
			"usr/lib/x86_64-linux-gnu/libblas.so.3":     "openblas-pthread/libblas.so.3",
			"usr/lib/x86_64-linux-gnu/liblapack.so.3":   "openblas-pthread/liblapack.so.3",
			"usr/lib/x86_64-linux-gnu/libopenblas.so.0": "openblas-pthread/libopenblas.so.0",
		}},
	"mlapp": {Files: map[string]string{"app/first.py": kataMLFirst}},
	// dsstack, stacked on mlstack, is what a Debian counterpart of the
	// Jupyter datascience notebook image adds: R with the recommended
	// packages, the tidyverse, IRkernel and the R packages such images
	// install (those bookworm has), rpy2, ODBC, pandoc and the TeX Live
	// parts nbconvert's PDF export uses, more of the scipy notebook's
	// Python libraries, geospatial and vision libraries, and a JDK (for
	// Spark). Julia, which the Jupyter image also carries, is not in
	// bookworm. TeX formats and Java alternatives, which maintainer
	// scripts would make, are not made: the program does not use them.
	"dsstack": {Over: "mlstack", Resolve: append(append([]string{}, mlStackPackages...),
		"r-base", "r-recommended", "r-base-dev", "r-cran-tidyverse", "r-cran-irkernel", "r-cran-caret",
		"r-cran-crayon", "r-cran-devtools", "r-cran-e1071", "r-cran-forecast", "r-cran-hexbin", "r-cran-htmltools",
		"r-cran-htmlwidgets", "r-cran-randomforest", "r-cran-rcurl", "r-cran-rmarkdown", "r-cran-rodbc",
		"r-cran-rsqlite", "r-cran-shiny", "r-cran-recipes", "r-cran-rsample", "r-cran-broom", "r-cran-sf",
		"r-cran-data.table", "r-cran-lme4", "python3-rpy2", "unixodbc", "unixodbc-dev", "pandoc", "texlive-xetex",
		"texlive-fonts-recommended", "texlive-plain-generic", "texlive-science",
		"python3-altair", "python3-xlrd", "python3-numexpr", "python3-bottleneck", "python3-protobuf",
		"python3-dill", "python3-cloudpickle", "python3-patsy", "python3-plotly", "python3-xgboost",
		"python3-geopandas", "python3-opencv", "python3-nltk", "python3-networkx", "python3-lxml",
		"python3-requests", "python3-boto3", "openjdk-17-jdk-headless"),
		PyCompile: []string{"usr/lib/python3/dist-packages"}},
}

// mlStackPackages are the packages (with their closure) of the ML
// image's stack, which the data-science image also resolves so that apt
// picks the same versions and alternatives beneath its own packages.
var mlStackPackages = []string{"python3-torch", "python3-torchvision", "python3-sklearn", "python3-pandas",
	"python3-matplotlib", "python3-scipy", "python3-skimage", "python3-numba", "python3-statsmodels",
	"python3-seaborn", "python3-sympy", "python3-h5py", "python3-tables", "python3-dask", "python3-openpyxl",
	"cython3", "python3-bs4", "python3-sqlalchemy", "jupyter-notebook", "python3-ipywidgets", "python3-dev",
	"build-essential", "git"}

// convertSettings names what package convert is asked for (its defaults:
// RAFS v6, zstd, 1 MiB chunks); it is part of an image's cache key.
const convertSettings = "convert defaults: rafs v6, zstd, 1 MiB chunks"

// BuildKataImages builds the tagged images from Debian packages (cached
// in guest-tests/.cache/debs), pushes them as OCI images to host/repo:TAG,
// converts each to host/repo:TAG-nydus with package convert and unpacks
// its bootstrap under work, as nydus-snapshotter would.
func BuildKataImages(ctx context.Context, host, repo string, auth authn.Authenticator, work string, tags ...string) (map[string]*NydusImage, error) {
	return buildKataImageSet(ctx, host, repo, auth, work, false, tags)
}

// ReuseKataImages is BuildKataImages for a registry whose storage is
// kept between runs (the benchmark's cache): each image is pushed as
// TAG-KEY, KEY digesting everything it is built from (package versions,
// files, command, convert settings), and an image already there under
// its key, with its Nydus image, is neither rebuilt nor converted again.
func ReuseKataImages(ctx context.Context, host, repo string, auth authn.Authenticator, work string, tags ...string) (map[string]*NydusImage, error) {
	return buildKataImageSet(ctx, host, repo, auth, work, true, tags)
}

func buildKataImageSet(ctx context.Context, host, repo string, auth authn.Authenticator, work string, reuse bool, tags []string) (map[string]*NydusImage, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	debs := filepath.Join(root, "guest-tests", ".cache", "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	log := logrus.StandardLogger()
	resolved := map[string][]debFile{}
	built := map[string]bool{}
	out := map[string]*NydusImage{}
	for _, tag := range tags {
		spec, ok := kataImageSpecs[tag]
		if !ok {
			return nil, fmt.Errorf("no image %q", tag)
		}
		key := sha256.New()
		for _, l := range spec.layers {
			if _, ok := resolved[l]; !ok {
				ds, err := resolveDebs(ctx, debs, kataLayers[l], log)
				if err != nil {
					return nil, err
				}
				if over := kataLayers[l].Over; over != "" {
					if ds, err = leaveOut(ds, resolved[over], over); err != nil {
						return nil, fmt.Errorf("layer %s: %w", l, err)
					}
				}
				resolved[l] = ds
			}
			fmt.Fprintf(key, "layer %s %s\n", l, layerKey(resolved[l], kataLayers[l]))
		}
		fmt.Fprintf(key, "cmd %q\n%s\n", spec.cmd, convertSettings)
		name := tag
		if reuse {
			name = tag + "-" + hex.EncodeToString(key.Sum(nil))[:16]
		}
		src := host + "/" + repo + ":" + name
		if reuse && imageExists(ctx, src, auth) && imageExists(ctx, src+"-nydus", auth) {
			log.Infof("guest: image %s is in the registry already", src)
			ni, err := FetchBootstrap(ctx, src+"-nydus", auth, filepath.Join(work, "snap-"+tag))
			if err != nil {
				return nil, err
			}
			ni.Tag = name
			out[tag] = ni
			continue
		}
		var dirs []string
		for _, l := range spec.layers {
			dir := filepath.Join(work, "layer-"+l)
			if !built[l] {
				if err := writeDebLayer(ctx, resolved[l], dir, kataLayers[l]); err != nil {
					return nil, err
				}
				built[l] = true
			}
			dirs = append(dirs, dir)
		}
		if _, err := PushDebImage(ctx, src, dirs, spec.cmd, auth, work); err != nil {
			return nil, err
		}
		ni, err := ConvertAndFetchBootstrap(ctx, src, src+"-nydus", auth, filepath.Join(work, "convert-cache"), filepath.Join(work, "snap-"+tag))
		if err != nil {
			return nil, err
		}
		ni.Tag = name
		out[tag] = ni
	}
	return out, nil
}

// leaveOut returns ds without the packages of lower (the resolved
// packages of layer over, which must come first in the image).
func leaveOut(ds, lower []debFile, over string) ([]debFile, error) {
	if lower == nil {
		return nil, fmt.Errorf("stacked on %s, which the image does not have beneath it", over)
	}
	have := map[string]bool{}
	for _, d := range lower {
		have[d.name+"="+d.version] = true
	}
	var out []debFile
	for _, d := range ds {
		if !have[d.name+"="+d.version] {
			out = append(out, d)
		}
	}
	return out, nil
}

// imageExists tells whether ref's manifest is in the registry.
func imageExists(ctx context.Context, ref string, auth authn.Authenticator) bool {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return false
	}
	_, err = remote.Head(r, remote.WithAuth(auth), remote.WithContext(ctx))
	return err == nil
}

// kataMLFirst is the ML image's program: a training script's start, which
// prints its first line once NumPy is imported.
const kataMLFirst = `import sys
import numpy as np
print("ML-FIRST-LINE python", sys.version.split()[0], "numpy", np.__version__, "sum", int(np.arange(1000).sum()), flush=True)
`

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
