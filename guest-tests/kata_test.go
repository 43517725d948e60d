package guesttests

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// kataGuest builds a guest with overlayfs (the agent's container rootfs)
// and busybox (the script that plays the agent).
func kataGuest(t *testing.T) *Guest {
	t.Helper()
	if testing.Short() {
		t.Skip("guest tests boot QEMU guests: skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := EnsureHost(ctx, logrus.StandardLogger()); err != nil {
		testenv.Skipf(t, "guest tests cannot run here: %v", err)
	}
	if staticBusybox() == nil {
		testenv.Skipf(t, "no static busybox on the host (apt-get install busybox-static)")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	g, err := BuildGuest(ctx, BuildOptions{ModuleRoot: root, CacheDir: filepath.Join(root, "guest-tests", ".cache"),
		Busybox: true, ExtraModules: []string{"overlay"}})
	if err != nil {
		t.Fatalf("building the guest: %v", err)
	}
	return g
}

// kataImages are two real images sharing their base layer (libc6 and a
// static busybox): one runs GNU hello, one a Python program.
type kataImages struct {
	py, hello *NydusImage
	base      string // blob id of the shared base layer's Nydus blob
}

func buildKataImages(t *testing.T, reg *testsvc.Registry) kataImages {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	debs := filepath.Join(root, "guest-tests", ".cache", "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	log := logrus.StandardLogger()
	layers := map[string]DebLayer{
		"base": {Packages: []string{"libc6", "busybox-static"},
			Symlinks: map[string]string{"bin/sh": "busybox"}},
		"python": {Packages: []string{"python3.11-minimal", "libpython3.11-minimal", "zlib1g", "libexpat1"}},
		"app":    {Files: map[string]string{"app/main.py": kataPyMain, "app/reader.py": kataPyReader}},
		"hello":  {Packages: []string{"hello"}},
	}
	for n, l := range layers {
		if err := BuildDebLayer(ctx, debs, filepath.Join(work, n), l, log); err != nil {
			t.Fatal(err)
		}
	}
	auth := &authn.Basic{Username: reg.User, Password: reg.Pass}
	at := func(n string) string { return filepath.Join(work, n) }
	images := []struct {
		tag    string
		layers []string
		cmd    []string
	}{
		{"py", []string{at("base"), at("python"), at("app")}, []string{"/usr/bin/python3.11", "/app/main.py"}},
		{"hello", []string{at("base"), at("hello")}, []string{"/usr/bin/hello"}},
	}
	cacheDir := filepath.Join(work, "convert-cache")
	var out kataImages
	for _, im := range images {
		src := reg.Host + "/" + reg.Repo + ":" + im.tag
		if _, err := PushDebImage(ctx, src, im.layers, im.cmd, auth, work); err != nil {
			t.Fatal(err)
		}
		ni, err := ConvertAndFetchBootstrap(ctx, src, src+"-nydus", auth, cacheDir, filepath.Join(work, "snap-"+im.tag))
		if err != nil {
			t.Fatal(err)
		}
		if im.tag == "py" {
			out.py = ni
		} else {
			out.hello = ni
		}
	}
	for id := range out.py.Blobs {
		if _, ok := out.hello.Blobs[id]; ok {
			out.base = id
		}
	}
	if out.base == "" {
		t.Fatalf("the two Nydus images share no blob: %v, %v", out.py.Blobs, out.hello.Blobs)
	}
	return out
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

// extraOption is nydus-snapshotter's extraoption (enable_nydus_overlayfs).
type extraOption struct {
	Source      string `json:"source"`
	Config      string `json:"config"`
	Snapshotdir string `json:"snapshotdir"`
	Version     string `json:"fs_version"`
}

// snapshotterConfig is the nydusd config nydus-snapshotter writes for a
// registry image (its FuseDaemonConfig, nydusd v1 shape).
func snapshotterConfig(reg *testsvc.Registry, host, snapshotID, workDir string) string {
	m := map[string]any{
		"device": map[string]any{
			"id": "/" + snapshotID,
			"backend": map[string]any{"type": "registry", "config": map[string]any{
				"host": host, "repo": reg.Repo, "auth": reg.AuthB64(), "scheme": "http", "skip_verify": true,
				"timeout": 5, "connect_timeout": 5, "retry_limit": 2,
			}},
			"cache": map[string]any{"type": "blobcache", "config": map[string]any{
				"work_dir": workDir, "disable_indexed_map": false,
			}},
		},
		"mode": "direct", "digest_validate": false, "iostats_files": false, "enable_xattr": true,
		"amplify_io":  1 << 20,
		"fs_prefetch": map[string]any{"enable": true, "prefetch_all": true, "threads_count": 8, "merging_size": 1 << 20},
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// decodeExtraOption is what Kata's runtime does with the rootfs mount's
// extraoption= value.
func decodeExtraOption(opt string) (*extraOption, error) {
	b, err := base64.StdEncoding.DecodeString(opt)
	if err != nil {
		return nil, fmt.Errorf("extraoption: %w", err)
	}
	var e extraOption
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("extraoption: %w", err)
	}
	if e.Source == "" || e.Config == "" || e.Snapshotdir == "" {
		return nil, fmt.Errorf("extraoption: source, config and snapshotdir are required: %+v", e)
	}
	return &e, nil
}

// kataAPI is the runtime's client of the daemon's API socket.
type kataAPI struct{ c *http.Client }

func newKataAPI(sock string) kataAPI {
	return kataAPI{c: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "unix", sock)
		}}}}
}

func (a kataAPI) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://unix"+path, rd)
	if err != nil {
		return 0, nil, err
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), nil
}

// waitRunning polls GET /api/v1/daemon as the runtimes do.
func (a kataAPI) waitRunning(ctx context.Context) error {
	var last string
	for i := 0; i < 100; i++ {
		code, b, err := a.do(ctx, http.MethodGet, "/api/v1/daemon", nil)
		if err == nil && code == http.StatusOK {
			var info struct {
				State string `json:"state"`
			}
			if json.Unmarshal(b, &info) == nil && info.State == "RUNNING" {
				return nil
			}
		}
		last = fmt.Sprintf("%d %s %v", code, b, err)
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("daemon not RUNNING: %s", last)
}

// mount posts a mount; encode percent-encodes the mountpoint as runtime-rs
// does (the Go runtime sends it raw).
func (a kataAPI) mount(ctx context.Context, method, mountpoint string, body any, encode bool) error {
	mp := mountpoint
	if encode {
		mp = url.QueryEscape(mountpoint)
	}
	code, b, err := a.do(ctx, method, "/api/v1/mount?mountpoint="+mp, body)
	if err != nil {
		return err
	}
	if code != http.StatusNoContent {
		return fmt.Errorf("%s %s: %d %s", method, mountpoint, code, b)
	}
	return nil
}

// kataShape is one way a Kata runtime launches the daemon.
type kataShape struct {
	name   string
	encode bool // percent-encode the mountpoint (runtime-rs)
	argv   func(daemon, sock string) (args []string, cwd string, api string)
}

var kataShapes = []kataShape{
	{"go-runtime", false, func(daemon, sock string) ([]string, string, string) {
		api := filepath.Join(filepath.Dir(sock), "nydusd-api.sock")
		return []string{daemon, "virtiofs", "--log-level", "info", "--apisock", api, "--sock", sock,
			"--thread-pool-size=1", "--announce-submounts"}, "", api
	}},
	{"runtime-rs", true, func(daemon, sock string) ([]string, string, string) {
		// rootless shape: relative socket names, cwd = the socket directory
		dir := filepath.Dir(sock)
		return []string{daemon, "virtiofs", "--hybrid-mode", "--log-level", "info", "--apisock", "nydusd-api.sock",
			"--sock", filepath.Base(sock)}, dir, filepath.Join(dir, "nydusd-api.sock")
	}},
}

// TestGuestKata drives the daemon as Kata Containers does with shared_fs =
// "virtio-fs-nydus" and nydus-snapshotter: a passthrough mount of the
// sandbox's shared directory at /containers, one RAFS mount per container
// at /rafs/<cid>/lowerdir from the snapshotter's extraoption (registry
// backend with credentials on a real loopback docker-registry, blob cache,
// prefetch on), and in a QEMU guest the agent's overlay rootfs per
// container (index=off, upper and work in the snapshot dir), in which the
// image's own program runs. Two containers share the base layer: its blob
// is fetched from the registry once and cached once. One container's
// image is unmounted (DELETE) while the other keeps reading. Both launch
// shapes (Go runtime, runtime-rs).
func TestGuestKata(t *testing.T) {
	g := kataGuest(t)
	daemon := rafsDaemon(t)
	for _, shape := range kataShapes {
		t.Run(shape.name, func(t *testing.T) {
			reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
			imgs := buildKataImages(t, reg)
			counter, err := StartBlobCounter(reg.Host)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { counter.Close() })
			runKata(t, g, daemon, shape, reg, counter, imgs)
		})
	}
}

func runKata(t *testing.T, g *Guest, daemon string, shape kataShape, reg *testsvc.Registry, counter *BlobCounter, imgs kataImages) {
	sandbox := t.TempDir()
	shared := filepath.Join(sandbox, "shared")
	cacheDir := filepath.Join(sandbox, "cache")
	for _, d := range []string{shared, cacheDir, filepath.Join(shared, "sync")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The snapshotter's side: one snapshot dir per container, handed to
	// the runtime as extraoption.
	type container struct {
		cid  string
		img  *NydusImage
		opt  string
		snap string
	}
	var cs []*container
	for i, c := range []struct {
		cid string
		img *NydusImage
	}{{"c-py", imgs.py}, {"c-hello", imgs.hello}} {
		snap := filepath.Join(sandbox, "snapshots", strconv.Itoa(i+1))
		for _, d := range []string{"fs", "work"} {
			if err := os.MkdirAll(filepath.Join(snap, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		eo, _ := json.Marshal(extraOption{Source: c.img.Bootstrap, Config: snapshotterConfig(reg, counter.Host, strconv.Itoa(i+1), cacheDir),
			Snapshotdir: snap, Version: "v6"})
		cs = append(cs, &container{cid: c.cid, img: c.img, opt: base64.StdEncoding.EncodeToString(eo), snap: snap})
	}
	// The runtime binds each snapshot dir into the shared directory.
	for _, c := range cs {
		dst := filepath.Join(shared, c.cid, "snapshotdir")
		for _, d := range []string{dst, filepath.Join(shared, c.cid, "rootfs")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Mount(c.snap, dst, "", unix.MS_BIND, ""); err != nil {
			testenv.Skipf(t, "bind mount (needs root): %v", err)
		}
		t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) })
	}

	var api kataAPI
	var apiSock string
	backend := Backend{Name: "kata-" + shape.name, Command: func(c BackendConfig) (*exec.Cmd, error) {
		args, cwd, a := shape.argv(daemon, c.Socket)
		apiSock = a
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = cwd
		return cmd, nil
	}}
	deleted := make(chan error, 1)
	before := func(ctx context.Context) error {
		api = newKataAPI(apiSock)
		if err := api.waitRunning(ctx); err != nil {
			return err
		}
		if err := api.mount(ctx, http.MethodPost, "/containers",
			map[string]string{"fs_type": "passthrough_fs", "source": shared, "config": ""}, shape.encode); err != nil {
			return err
		}
		for _, c := range cs {
			eo, err := decodeExtraOption(c.opt)
			if err != nil {
				return err
			}
			if err := api.mount(ctx, http.MethodPost, "/rafs/"+c.cid+"/lowerdir",
				map[string]string{"fs_type": "rafs", "source": eo.Source, "config": eo.Config}, shape.encode); err != nil {
				return err
			}
		}
		// The hello container is removed while the Python one reads: the
		// guest says when its overlay is gone, the runtime DELETEs.
		go func() {
			deadline := time.Now().Add(4 * time.Minute)
			for time.Now().Before(deadline) {
				if _, err := os.Stat(filepath.Join(shared, "sync", "c-hello-umounted")); err == nil {
					err := api.mount(context.Background(), http.MethodDelete, "/rafs/c-hello/lowerdir", nil, shape.encode)
					if err == nil {
						err = os.WriteFile(filepath.Join(shared, "sync", "c-hello-deleted"), nil, 0o644)
					}
					deleted <- err
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			deleted <- fmt.Errorf("the guest never unmounted c-hello")
		}()
		return nil
	}
	steps := []check.Step{{Name: "kata-agent", Kind: check.KindExec, Argv: []string{"/bin/busybox", "sh", "-c", kataAgentScript}}}
	logs := logDir(t)
	res, err := Run(context.Background(), RunOptions{
		Guest: g, Backend: backend, BeforeGuest: before,
		Config: check.Config{Tag: "kataShared", Mount: "/run/kata-containers/shared", Steps: steps, StepTimeoutSec: 240},
		LogDir: logs, Timeout: 6 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	logRun(t, res)
	serial, _ := os.ReadFile(filepath.Join(logs, "serial.log"))
	if err := Verify(res, steps); err != nil {
		t.Errorf("%v\n%s", err, res.Tails(40))
	}
	select {
	case err := <-deleted:
		if err != nil {
			t.Errorf("DELETE of c-hello: %v", err)
		}
	default:
		t.Error("the DELETE of c-hello never happened")
	}
	for _, want := range []string{"HELLO-OUT Hello, world!", "PY-FIRST-LINE python 3.11", "PY-DONE files=", "READER-OK rounds=",
		"C-HELLO-GONE", "PY-AGAIN PY-FIRST-LINE"} {
		if !bytes.Contains(serial, []byte(want)) {
			t.Errorf("the guest's console lacks %q", want)
		}
	}
	// Writes land in the snapshot dir on the host.
	if b, err := os.ReadFile(filepath.Join(cs[0].snap, "fs", "out.txt")); err != nil || string(b) != "written by the container\n" {
		t.Errorf("the container's write is not in its upperdir on the host: %q %v", b, err)
	}
	// The shared blob: fetched once (the registry sent at most its size
	// for it), cached once.
	sent := counter.Bytes()
	base := imgs.base
	size := imgs.py.Blobs[base]
	t.Logf("registry: bytes sent per blob %v, GETs %v (shared base blob %.12s: %d bytes)", sent, counter.Requests(), base, size)
	if sent[base] == 0 || sent[base] > size {
		t.Errorf("shared blob %.12s: the registry sent %d bytes for a %d-byte blob (want it fetched once)", base, sent[base], size)
	}
	ms, _ := filepath.Glob(filepath.Join(cacheDir, base+"*.blob.data"))
	if len(ms) != 1 {
		ents, _ := os.ReadDir(cacheDir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("shared blob cached %d times in %s: %v", len(ms), cacheDir, names)
	}
}

// kataAgentScript plays kata-agent (and the container's processes) in
// the guest: the overlay rootfs per container as the agent mounts it,
// chroot into it, the image's program.
const kataAgentScript = `set -u
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
S=/run/kata-containers/shared
fail() {
  echo "KATA-FAIL $*"
  for c in c-py c-hello; do umount $S/containers/$c/rootfs/dev 2>/dev/null; umount $S/containers/$c/rootfs 2>/dev/null; done
  exit 1
}
for c in c-py c-hello; do
  L=$S/rafs/$c/lowerdir; C=$S/containers/$c
  ls $L >/dev/null || fail "no lowerdir for $c"
  mount -t overlay overlay -o lowerdir=$L,upperdir=$C/snapshotdir/fs,workdir=$C/snapshotdir/work,index=off $C/rootfs || fail "overlay $c"
done
R1=$S/containers/c-py/rootfs; R2=$S/containers/c-hello/rootfs
# the container's /dev, as the agent gives it one (Python reads /dev/urandom)
mkdir -p $R1/dev && mount --bind /dev $R1/dev || fail "dev"
echo "HELLO-OUT $(chroot $R2 /usr/bin/hello)"
chroot $R1 /usr/bin/python3.11 /app/main.py || fail "python"
chroot $R1 /usr/bin/python3.11 /app/reader.py 8 &
RD=$!
sleep 1
umount $R2 || fail "umount c-hello rootfs"
touch $S/containers/sync/c-hello-umounted
i=0
while [ ! -e $S/containers/sync/c-hello-deleted ]; do
  i=$((i+1)); [ $i -gt 600 ] && fail "no DELETE from the host"
  sleep 0.1; ls $S/containers/sync >/dev/null
done
echo 2 > /proc/sys/vm/drop_caches
if ls $S/rafs/c-hello/lowerdir/usr/bin/hello >/dev/null 2>&1; then fail "c-hello still mounted after DELETE"; fi
echo C-HELLO-GONE
wait $RD || fail "reader"
echo "PY-AGAIN $(chroot $R1 /usr/bin/python3.11 /app/main.py | head -1)"
cat $R1/out.txt
umount $R1/dev && umount $R1 || fail "umount c-py rootfs"
echo KATA-OK
`
