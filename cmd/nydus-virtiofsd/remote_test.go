package main

import (
	"archive/tar"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// remoteImage is an image whose blobs the remote backends serve, with the
// md5 of every regular file as read from its blobs on disk.
type remoteImage struct {
	name  string
	boot  string
	blobs map[string][]byte // blob id -> bytes
	md5s  map[string]string // path -> md5
}

func remoteImages(t *testing.T, bin string) []remoteImage {
	t.Helper()
	src := t.TempDir()
	r := rand.New(rand.NewPCG(9, 9))
	files := map[string]int{"big.bin": 3<<20 + 4321, "etc/hostname": 9, "usr/lib/lib.so": 700 << 10, "empty": 0}
	for name, n := range files {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32() % 7) // compressible
		}
		os.MkdirAll(filepath.Join(src, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	created := t.TempDir()
	boot := filepath.Join(created, "image.boot")
	if out, err := exec.Command(bin, "create", "--bootstrap", boot, "--blob-dir", created, "--compressor", "zstd", src).CombinedOutput(); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	v5, _ := filepath.Abs(filepath.Join(fixtures, "v5-repeatable"))
	v6, _ := filepath.Abs(filepath.Join(fixtures, "v6-2.2"))
	imgs := []remoteImage{
		{name: "v5", boot: filepath.Join(v5, "sha256-nocompress-repeatable")},
		{name: "v6", boot: filepath.Join(v6, "rafs-v6-2.2.boot")},
		{name: "created", boot: boot},
	}
	dirs := []string{filepath.Join(v5, "blobs"), v6, created}
	for i := range imgs {
		img := &imgs[i]
		img.blobs = map[string][]byte{}
		ents, _ := os.ReadDir(dirs[i])
		for _, e := range ents {
			if len(e.Name()) == 64 {
				b, err := os.ReadFile(filepath.Join(dirs[i], e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				img.blobs[e.Name()] = b
			}
		}
		out := filepath.Join(t.TempDir(), "ref.tar")
		if b, err := exec.Command(bin, "unpack", "--bootstrap", img.boot, "--blob-dir", dirs[i], "--output", out).CombinedOutput(); err != nil {
			t.Fatalf("unpack %s: %v\n%s", img.name, err, b)
		}
		img.md5s = tarMD5s(t, out)
		if len(img.md5s) == 0 || len(img.blobs) == 0 {
			t.Fatalf("image %s: %d files, %d blobs", img.name, len(img.md5s), len(img.blobs))
		}
	}
	return imgs
}

func tarMD5s(t *testing.T, path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			s := md5.New()
			io.Copy(s, tr)
			m[strings.TrimPrefix(h.Name, "./")] = hex.EncodeToString(s.Sum(nil))
		}
	}
}

// remoteScenario serves the blobs of imgs somewhere and returns a nydusd
// config for them (JSON or TOML) and the secrets in it.
type remoteScenario struct {
	name  string
	serve func(t *testing.T, imgs []remoteImage) (cfg string, secrets []string)
}

func putBlobs(t *testing.T, imgs []remoteImage, put func(id string, b []byte)) {
	for _, img := range imgs {
		for id, b := range img.blobs {
			put(id, b)
		}
	}
}

func registryBlobs(t *testing.T, reg *testsvc.Registry, imgs []remoteImage) {
	putBlobs(t, imgs, func(id string, b []byte) {
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) == id {
			reg.PushBlob(t, b)
		} else {
			reg.SeedBlob(t, id, b) // a fixture whose id is not its sha256
		}
	})
}

// snapshotterJSON is the v1 config nydus-snapshotter writes, for a
// registry, with a blob cache of the test's own (a shared one would answer
// a later scenario's reads without its backend).
func snapshotterJSON(t *testing.T, reg *testsvc.Registry, extra map[string]any) string {
	be := map[string]any{"scheme": "http", "host": reg.Host, "repo": reg.Repo, "auth": reg.AuthB64(),
		"timeout": 5, "connect_timeout": 5, "retry_limit": 2}
	for k, v := range extra {
		be[k] = v
	}
	b, _ := json.Marshal(map[string]any{
		"device": map[string]any{"backend": map[string]any{"type": "registry", "config": be},
			"cache": map[string]any{"type": "blobcache", "config": map[string]any{"work_dir": t.TempDir()}}},
		"mode": "direct", "digest_validate": true, "enable_xattr": true, "amplify_io": 1 << 20,
		"fs_prefetch": map[string]any{"enable": true, "threads_count": 8, "merging_size": 1 << 20, "prefetch_all": true},
	})
	return string(b)
}

var remoteScenarios = []remoteScenario{
	{"registry basic", func(t *testing.T, imgs []remoteImage) (string, []string) {
		reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
		registryBlobs(t, reg, imgs)
		return snapshotterJSON(t, reg, nil), []string{reg.Pass, reg.AuthB64()}
	}},
	{"registry token toml", func(t *testing.T, imgs []remoteImage) (string, []string) {
		reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthToken})
		registryBlobs(t, reg, imgs)
		return fmt.Sprintf("version = 2\n[backend]\ntype = \"registry\"\n[backend.registry]\nscheme = \"http\"\nhost = %q\nrepo = %q\nauth = %q\n[rafs]\nvalidate = true\n",
			reg.Host, reg.Repo, reg.AuthB64()), []string{reg.Pass, reg.AuthB64()}
	}},
	{"registry redirect to s3", func(t *testing.T, imgs []remoteImage) (string, []string) {
		reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthToken, S3: testsvc.StartS3(t)})
		registryBlobs(t, reg, imgs)
		return snapshotterJSON(t, reg, nil), []string{reg.Pass, reg.AuthB64(), "X-Amz-Signature"}
	}},
	{"s3", func(t *testing.T, imgs []remoteImage) (string, []string) {
		s3 := testsvc.StartS3(t)
		putBlobs(t, imgs, func(id string, b []byte) { s3.Put(t, "layers/"+id, b) })
		return fmt.Sprintf(`{"version":2,"backend":{"type":"s3","s3":{"scheme":"http","endpoint":%q,"region":%q,"bucket_name":%q,"object_prefix":"layers/","access_key_id":%q,"access_key_secret":%q}},"rafs":{"validate":true}}`,
			s3.Endpoint, s3.Region, s3.Bucket, s3.AccessKey, s3.SecretKey), []string{"X-Amz-Signature"}
	}},
	{"http-proxy unix socket", func(t *testing.T, imgs []remoteImage) (string, []string) {
		root := t.TempDir()
		putBlobs(t, imgs, func(id string, b []byte) { os.WriteFile(filepath.Join(root, id), b, 0o644) })
		sock := filepath.Join(t.TempDir(), "blobs.sock")
		testsvc.StartNginx(t, testsvc.NginxOptions{Root: root, Socket: sock})
		return fmt.Sprintf(`{"version":2,"backend":{"type":"http-proxy","http-proxy":{"addr":%q,"path":"/blobs"}}}`, sock), nil
	}},
	{"registry through proxy", func(t *testing.T, imgs []remoteImage) (string, []string) {
		reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
		registryBlobs(t, reg, imgs)
		ng := testsvc.StartNginx(t, testsvc.NginxOptions{ForwardProxy: true})
		t.Cleanup(func() {
			if ng.Requests() == 0 {
				t.Error("nothing went through the proxy")
			}
		})
		return snapshotterJSON(t, reg, map[string]any{"proxy": map[string]any{"url": "http://" + ng.Host,
			"ping_url": "http://" + ng.Host + "/ping", "fallback": true}}), []string{reg.Pass, reg.AuthB64()}
	}},
	{"registry proxy down fallback", func(t *testing.T, imgs []remoteImage) (string, []string) {
		reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
		registryBlobs(t, reg, imgs)
		dead := fmt.Sprintf("http://127.0.0.1:%d", testsvc.FreePort(t))
		return snapshotterJSON(t, reg, map[string]any{"proxy": map[string]any{"url": dead, "ping_url": dead + "/ping", "fallback": true}}),
			[]string{reg.Pass, reg.AuthB64()}
	}},
}

// checkNoSecrets checks a daemon's debug output: it logged its backend
// requests, and no secret.
func checkNoSecrets(t *testing.T, what, out string, secrets []string) {
	t.Helper()
	if what != "daemon info" && !strings.Contains(out, "backend request") {
		t.Errorf("%s output logged no backend request", what)
	}
	for _, s := range append(secrets, "Bearer ", "Basic ") {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("%s output shows a secret (%.8s…)", what, s)
		}
	}
}

// TestRemoteBackendsFuse mounts each image with `fuse --config` naming
// each remote backend and compares every file's md5 with the image read
// from its blobs on disk.
func TestRemoteBackendsFuse(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root for a direct FUSE mount")
	}
	bin := buildBinary(t)
	imgs := remoteImages(t, bin)
	for _, sc := range remoteScenarios {
		t.Run(sc.name, func(t *testing.T) {
			cfg, secrets := sc.serve(t, imgs)
			cfgPath := filepath.Join(t.TempDir(), "nydusd.conf")
			os.WriteFile(cfgPath, []byte(cfg), 0o600)
			for _, img := range imgs {
				t.Run(img.name, func(t *testing.T) {
					mnt, out := fuseMount(t, bin, img.boot, cfgPath)
					defer func() { checkNoSecrets(t, "fuse", out.String(), secrets) }()
					for path, want := range img.md5s {
						b, err := os.ReadFile(filepath.Join(mnt, path))
						sum := md5.Sum(b)
						if err != nil || hex.EncodeToString(sum[:]) != want {
							t.Errorf("%s: %v, md5 %x want %s", path, err, sum, want)
						}
					}
				})
			}
		})
	}
}

// fuseMount runs `fuse --config cfg` for boot until the test ends (SIGTERM,
// then kill) and returns the mountpoint once mounted, and the daemon's
// output.
func fuseMount(t *testing.T, bin, boot, cfg string) (string, *testsvc.Buffer) {
	t.Helper()
	return fuseMountArgs(t, bin, boot, cfg)
}

// fuseMountArgs is fuseMount with more options for the fuse command.
func fuseMountArgs(t *testing.T, bin, boot, cfg string, args ...string) (string, *testsvc.Buffer) {
	t.Helper()
	mnt := t.TempDir()
	cmd := exec.Command(bin, append([]string{"fuse", "--log-level", "debug", "--bootstrap", boot, "--config", cfg, "--mountpoint", mnt}, args...)...)
	out := &testsvc.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	var st syscall.Statfs_t
	for i := 0; syscall.Statfs(mnt, &st) != nil || st.Type != 0x65735546; i++ { // FUSE_SUPER_MAGIC
		if i == 400 {
			t.Fatalf("not mounted after 10 s:\n%s", out.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	return mnt, out
}

// TestRemoteBackendsAPI mounts each image through POST /api/v1/mount with
// each remote backend's config in the request's config string, as Kata
// does, and reads every file through the vhost-user device.
func TestRemoteBackendsAPI(t *testing.T) {
	bin := buildBinary(t)
	imgs := remoteImages(t, bin)
	for _, sc := range remoteScenarios {
		t.Run(sc.name, func(t *testing.T) {
			cfg, secrets := sc.serve(t, imgs)
			dir := t.TempDir()
			apiSock, vsock := filepath.Join(dir, "api.sock"), filepath.Join(dir, "vhost.sock")
			d := startDaemon(t, bin, nil, "virtiofs", "--log-level", "debug", "--apisock", apiSock, "--sock", vsock)
			hc := apiClient(apiSock)
			for _, img := range imgs {
				req, _ := json.Marshal(map[string]string{"fs_type": "rafs", "source": img.boot, "config": cfg})
				if code, body := apiDo(t, hc, "POST", "/api/v1/mount?mountpoint=/rafs/"+img.name+"/lowerdir", string(req)); code != 204 {
					t.Fatalf("mount %s = %d %s", img.name, code, body)
				}
			}
			code, body := apiDo(t, hc, "GET", "/api/v1/daemon", "")
			if code != 200 {
				t.Fatalf("daemon info %d", code)
			}
			checkNoSecrets(t, "daemon info", body, secrets)
			drv, c := connectFUSE(t, d, vsock, testdriver.QEMU)
			defer drv.Close()
			for _, img := range imgs {
				for path, want := range img.md5s {
					sum := md5.Sum(readAll(t, c, lookupPath(t, c, "rafs/"+img.name+"/lowerdir/"+path)))
					if hex.EncodeToString(sum[:]) != want {
						t.Errorf("%s %s: md5 %x want %s", img.name, path, sum, want)
					}
				}
			}
			checkNoSecrets(t, "daemon", d.log(), secrets)
		})
	}
}
