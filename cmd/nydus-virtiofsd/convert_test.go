package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/convert"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// TestConvertCommand runs `convert` and `check --target` as a user types
// them against a real registry: the summary JSON, the check of the result
// against its source (FUSE mount over the registry backend), a check of
// an image that is not Nydus failing, and flag errors.
func TestConvertCommand(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/motd", Mode: 0o644, Size: 6})
	tw.Write([]byte("hello\n"))
	tw.Close()
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON),
		static.NewLayer(tb.Bytes(), types.OCIUncompressedLayer))
	if err != nil {
		t.Fatal(err)
	}
	src := reg + "/cli/app:v1"
	ref, _ := name.ParseReference(src, name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sumPath := filepath.Join(dir, "summary.json")
	if rc := runConvert([]string{"--source", src, "--target-suffix", "-nydus", "--plain-http", "--work-dir", filepath.Join(dir, "cache"),
		"--output-json", sumPath, "--compressor", "lz4_block", "--chunk-size", "0x10000"}); rc != 0 {
		t.Fatalf("convert exit %d", rc)
	}
	b, err := os.ReadFile(sumPath)
	if err != nil {
		t.Fatal(err)
	}
	var sum convert.Summary
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Target != src+"-nydus" || len(sum.Images) != 1 || len(sum.Images[0].Layers) != 1 || !strings.HasPrefix(sum.TargetDigest, "sha256:") {
		t.Errorf("summary %s", b)
	}
	repPath := filepath.Join(dir, "check.json")
	if rc := runCheck([]string{"--target", src + "-nydus", "--source", src, "--plain-http", "--output-json", repPath}); rc != 0 {
		t.Fatalf("check exit %d", rc)
	}
	var rep convert.CheckReport
	if b, err = os.ReadFile(repPath); err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil || rep.FilesCompared != 2 || !rep.OK() {
		t.Errorf("check report %s (%v)", b, err)
	}
	if rc := runCheck([]string{"--target", src, "--plain-http"}); rc != 1 {
		t.Errorf("check of an OCI image: exit %d, want 1", rc)
	}
	// --backend-type localfs with --backend-config-file: the blob goes to
	// the directory, and check finds it there with the same flags.
	blobs := filepath.Join(dir, "blobs")
	cfgPath := filepath.Join(dir, "backend.json")
	if err := os.WriteFile(cfgPath, []byte(`{"dir":"`+blobs+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	storeArgs := []string{"--backend-type", "localfs", "--backend-config-file", cfgPath, "--plain-http"}
	if rc := runConvert(append([]string{"--source", src, "--target", src + "-localfs", "--work-dir", filepath.Join(dir, "cache")}, storeArgs...)); rc != 0 {
		t.Fatalf("convert --backend-type localfs: exit %d", rc)
	}
	if ents, err := os.ReadDir(blobs); err != nil || len(ents) != 1 {
		t.Errorf("localfs backend holds %v (%v), want one blob", ents, err)
	}
	if rc := runCheck(append([]string{"--target", src + "-localfs", "--source", src}, storeArgs...)); rc != 0 {
		t.Errorf("check --backend-type localfs: exit %d", rc)
	}
	// --build-cache: a second conversion with an empty --work-dir (another
	// machine) takes its layer from the cache image.
	cacheArgs := []string{"--source", src, "--target", src + "-cached", "--plain-http", "--build-cache", reg + "/cli/cache:c",
		"--build-cache-version", "t1", "--build-cache-max-records", "5", "--output-json", sumPath}
	for i, want := range []bool{false, true} {
		if rc := runConvert(append(cacheArgs, "--work-dir", filepath.Join(dir, fmt.Sprint("bc", i)))); rc != 0 {
			t.Fatalf("convert --build-cache (%d): exit %d", i, rc)
		}
		var sum convert.Summary
		if b, err := os.ReadFile(sumPath); err != nil || json.Unmarshal(b, &sum) != nil || len(sum.Images) != 1 {
			t.Fatalf("convert --build-cache (%d): summary %s (%v)", i, b, err)
		}
		if got := sum.Images[0].Layers[0].BuildCache; got != want {
			t.Errorf("convert --build-cache (%d): layer from the build cache %v, want %v", i, got, want)
		}
	}
	for _, args := range [][]string{
		{"--source", src, "--target", src + "-x", "--build-cache", reg + "/cli/cache:c", "--build-cache-max-records", "-1"},
		{"--source", src, "--target", src + "-x", "--build-cache", reg + "/cli/cache:c", "--backend-type", "localfs", "--backend-config-file", cfgPath},
		{"--source", src}, // no target
		{"--source", src, "--target", src + "-x", "--fs-version", "4"}, // bad version
		{"--source", src, "--target", src + "-x", "--compressor", "gzip"},
		{"--source", src, "--source-archive", "x.tar", "--target", src + "-x"},
		{"--source", src, "--target", src + "-x", "--backend-type", "ftp", "--backend-config", "{}"},
		{"--source", src, "--target", src + "-x", "--backend-type", "s3"}, // no config
		{"--source", src, "--target", src + "-x", "--batch-size", "0x100000"},
		{"--source", src, "--target", src + "-x", "--backend-type", "localfs", "--backend-config", "{}", "--backend-config-file", cfgPath},
	} {
		if rc := runConvert(append(args, "--plain-http", "--work-dir", filepath.Join(dir, "cache"))); rc == 0 {
			t.Errorf("convert %v succeeded", args)
		}
	}
}

// TestConvertServedByDaemon: an image converted by the binary (credentials
// from DOCKER_CONFIG, Basic auth) is served by the binary's `fuse`
// subcommand with a registry backend, lazily from the registry, and every
// path of the mount matches the source flattened by go-containerregistry.
func TestConvertServedByDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root for a direct FUSE mount")
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		testenv.Skip(t, "busybox-static not installed (scripts/install-deps.sh)")
	}
	bin := buildBinary(t)
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
	cfgDir := t.TempDir()
	os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Host, reg.AuthB64())), 0o600)
	t.Setenv("DOCKER_CONFIG", cfgDir)

	layer := func(entries ...tar.Header) v1.Layer {
		var tb bytes.Buffer
		tw := tar.NewWriter(&tb)
		for _, h := range entries {
			data := []byte(nil)
			if h.Typeflag == tar.TypeReg {
				if h.Name == "bin/busybox" {
					data = bb
				} else {
					data = bytes.Repeat([]byte(h.Name+"\n"), 5000)
				}
				h.Size = int64(len(data))
			}
			h.Format = tar.FormatPAX
			tw.WriteHeader(&h)
			tw.Write(data)
		}
		tw.Close()
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(tb.Bytes())
		zw.Close()
		return static.NewLayer(gz.Bytes(), types.OCILayer)
	}
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON),
		layer(tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755},
			tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755},
			tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/sh", Linkname: "busybox", Mode: 0o777},
			tar.Header{Typeflag: tar.TypeDir, Name: "var/", Mode: 0o755},
			tar.Header{Typeflag: tar.TypeDir, Name: "var/lib/", Mode: 0o700, Uid: 100, Gid: 101},
			tar.Header{Typeflag: tar.TypeReg, Name: "var/lib/state", Mode: 0o600, Uid: 100, Gid: 101,
				PAXRecords: map[string]string{"SCHILY.xattr.user.origin": "layer1"}},
			tar.Header{Typeflag: tar.TypeLink, Name: "var/lib/state-link", Linkname: "var/lib/state"},
			tar.Header{Typeflag: tar.TypeReg, Name: "var/old", Mode: 0o644},
			tar.Header{Typeflag: tar.TypeChar, Name: "var/null", Mode: 0o666, Devmajor: 1, Devminor: 3}),
		layer(tar.Header{Typeflag: tar.TypeDir, Name: "var/", Mode: 0o755},
			tar.Header{Typeflag: tar.TypeReg, Name: "var/.wh.old", Mode: 0o644},
			tar.Header{Typeflag: tar.TypeDir, Name: "var/lib/", Mode: 0o755},
			tar.Header{Typeflag: tar.TypeReg, Name: "var/lib/.wh..wh..opq", Mode: 0o644},
			tar.Header{Typeflag: tar.TypeReg, Name: "var/lib/new", Mode: 0o644}))
	if err != nil {
		t.Fatal(err)
	}
	src := reg.Host + "/served/app:v1"
	sref, _ := name.ParseReference(src, name.Insecure)
	if err := remote.Write(sref, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		t.Fatal(err)
	}
	target := reg.Host + "/served/app:nydus"
	if out, err := exec.Command(bin, "convert", "--source", src, "--target", target, "--plain-http", "--work-dir", t.TempDir()).CombinedOutput(); err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}
	tref, _ := name.ParseReference(target, name.Insecure)
	nimg, err := remote.Image(tref, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := nimg.Layers()
	rc, err := ls[len(ls)-1].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	bl, err := convert.ReadBootstrapLayer(rc, 1<<30)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	boot := filepath.Join(dir, "image.boot")
	os.WriteFile(boot, bl.Bootstrap, 0o644)
	cfg := filepath.Join(dir, "nydusd.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("version = 2\n[backend]\ntype = \"registry\"\n[backend.registry]\nscheme = \"http\"\nhost = %q\nrepo = \"served/app\"\nauth = %q\n[rafs]\nvalidate = true\n",
		reg.Host, reg.AuthB64())), 0o600)
	mnt := t.TempDir()
	cmd := exec.Command(bin, "fuse", "--bootstrap", boot, "--config", cfg, "--mountpoint", mnt)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	var st syscall.Statfs_t
	for i := 0; ; i++ {
		if syscall.Statfs(mnt, &st) == nil && st.Type == 0x65735546 { // FUSE_SUPER_MAGIC
			break
		}
		if i == 400 {
			t.Fatalf("not mounted after 10 s:\n%s", out.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	got, err := convert.MountTree(mnt)
	if err != nil {
		t.Fatalf("walk the mount: %v\n%s", err, out.String())
	}
	simg, err := remote.Image(sref, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatal(err)
	}
	want, err := convert.SourceTree(simg)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := convert.CompareTrees(want, got); len(diffs) > 0 || len(want) != 7 { // bin, busybox, sh, var, var/lib, var/lib/new, var/null
		t.Errorf("%d paths (%d served); differences:\n%s\n%s", len(want), len(got), strings.Join(diffs, "\n"), out.String())
	}
	if _, ok := got["/var/old"]; ok {
		t.Error("/var/old was deleted by a whiteout and is still served")
	}
}
