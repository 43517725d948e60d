package guesttests

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
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
	ims, err := BuildKataImages(ctx, reg.Host, reg.Repo, &authn.Basic{Username: reg.User, Password: reg.Pass}, t.TempDir(), "py", "hello")
	if err != nil {
		t.Fatal(err)
	}
	out := kataImages{py: ims["py"], hello: ims["hello"]}
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
		eo, _ := json.Marshal(ExtraOption{Source: c.img.Bootstrap, Config: SnapshotterConfig(counter.Host, reg.Repo, reg.AuthB64(), strconv.Itoa(i+1), cacheDir, true),
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

	var api KataAPI
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
		api = NewKataAPI(apiSock)
		var ims []RafsMount
		for _, c := range cs {
			eo, err := DecodeExtraOption(c.opt)
			if err != nil {
				return err
			}
			ims = append(ims, RafsMount{CID: c.cid, Bootstrap: eo.Source, Config: eo.Config})
		}
		if err := api.StartSandbox(ctx, shared, ims, shape.encode); err != nil {
			return err
		}
		// The hello container is removed while the Python one reads: the
		// guest says when its overlay is gone, the runtime DELETEs.
		go func() {
			deadline := time.Now().Add(4 * time.Minute)
			for time.Now().Before(deadline) {
				if _, err := os.Stat(filepath.Join(shared, "sync", "c-hello-umounted")); err == nil {
					err := api.Mount(context.Background(), http.MethodDelete, "/rafs/c-hello/lowerdir", nil, shape.encode)
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

// TestPrefetchList turns an access pattern (inodes, in first-access
// order) into the paths of the regular files that were read, with the
// paths found in a real nydus-image bootstrap.
func TestPrefetchList(t *testing.T) {
	boot := filepath.Join("..", "rafs", "testdata", "fixtures", "nydus", "v6-2.2", "rafs-v6-2.2.boot")
	img, err := rafs.Open(boot, rafs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	inos := map[string]uint64{}
	if err := img.Walk(func(p string, n *rafs.Inode) error {
		inos[p] = n.Ino
		if n.IsRegular() {
			files = append(files, p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	img.Close()
	if len(files) < 2 {
		t.Fatalf("fixture has %d files", len(files))
	}
	dir := inos["/"]
	a, b := files[len(files)-1], files[0]
	for _, tc := range []struct {
		name    string
		pattern []PatternEntry
		want    []string
	}{
		{"first-access order", []PatternEntry{{inos[a], 2}, {inos[b], 1}}, []string{a, b}},
		{"unread files and directories left out", []PatternEntry{{dir, 3}, {inos[b], 0}, {inos[a], 1}}, []string{a}},
		{"unknown inode left out", []PatternEntry{{1 << 40, 1}, {inos[b], 1}}, []string{b}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PrefetchList(boot, tc.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
