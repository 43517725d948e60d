package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
)

// apiClient talks HTTP over the daemon's API socket, as Kata does.
func apiClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
}

func apiDo(t *testing.T, c *http.Client, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://unix"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// lookupPath walks a slash-separated path from the root.
func lookupPath(t *testing.T, c *fuseclient.Client, path string) *fuse.EntryOut {
	t.Helper()
	node := uint64(fuse.FUSE_ROOT_ID)
	var e *fuse.EntryOut
	for _, name := range strings.Split(strings.Trim(path, "/"), "/") {
		var err error
		if e, err = c.Lookup(node, name); err != nil {
			t.Fatalf("lookup %s (at %s): %v", path, name, err)
		}
		node = e.NodeId
	}
	return e
}

func readAll(t *testing.T, c *fuseclient.Client, e *fuse.EntryOut) []byte {
	t.Helper()
	o, err := c.Open(e.NodeId, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release(e.NodeId, o.Fh)
	var out []byte
	for off := uint64(0); off < e.Attr.Size; {
		b, err := c.Read(e.NodeId, o.Fh, off, 128<<10)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			break
		}
		out = append(out, b...)
		off += uint64(len(b))
	}
	return out
}

// TestKataNydusSequence replays what Kata's Go runtime does with
// shared_fs = "virtio-fs-nydus": start the daemon with an empty root, poll
// the API until RUNNING, mount the shared directory at /containers and an
// image at /rafs/<cid>/lowerdir, let the guest read both, unmount, exit.
func TestKataNydusSequence(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	apiSock, vsock := filepath.Join(dir, "nydusd-api.sock"), filepath.Join(dir, "vhost-fs.sock")
	d := startDaemon(t, bin, nil, "virtiofs", "--log-level", "info", "--apisock", apiSock, "--sock", vsock,
		"--thread-pool-size=1", "--announce-submounts")
	hc := apiClient(apiSock)

	var info struct {
		State   string            `json:"state"`
		Version map[string]string `json:"version"`
	}
	code, body := apiDo(t, hc, "GET", "/api/v1/daemon", "")
	if code != 200 || json.Unmarshal([]byte(body), &info) != nil || info.State != "RUNNING" {
		t.Fatalf("GET /api/v1/daemon = %d %s; want 200 and state RUNNING", code, body)
	}
	for _, k := range []string{"package_ver", "git_commit", "build_time", "profile", "rustc"} {
		if info.Version[k] == "" {
			t.Errorf("version.%s missing (runtime-rs needs all five)", k)
		}
	}

	share := shareDir(t)
	code, body = apiDo(t, hc, "POST", "/api/v1/mount?mountpoint=/containers",
		fmt.Sprintf(`{"fs_type":"passthrough_fs","source":%q,"config":""}`, share))
	if code != 204 {
		t.Fatalf("mount passthrough = %d %s", code, body)
	}
	v5 := filepath.Join(fixtures, "v5-repeatable")
	blobs, _ := filepath.Abs(filepath.Join(v5, "blobs"))
	boot, _ := filepath.Abs(filepath.Join(v5, "sha256-nocompress-repeatable"))
	cfg := fmt.Sprintf(`{"device":{"backend":{"type":"localfs","config":{"dir":%q}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"mode":"direct","digest_validate":true,"iostats_files":false,"enable_xattr":true}`, blobs, t.TempDir())
	req, _ := json.Marshal(map[string]string{"fs_type": "rafs", "source": boot, "config": cfg})
	// runtime-rs percent-encodes the mountpoint.
	code, body = apiDo(t, hc, "POST", "/api/v1/mount?mountpoint=%2Frafs%2Fc1%2Flowerdir", string(req))
	if code != 204 {
		t.Fatalf("mount rafs = %d %s", code, body)
	}

	drv, c := connectFUSE(t, d, vsock, testdriver.QEMU)
	if got := string(readAll(t, c, lookupPath(t, c, "containers/hello.txt"))); got != "hello, guest\n" {
		t.Fatalf("containers/hello.txt = %q", got)
	}
	// PROVENANCE.md: md5 of /normal-file-test/test.sh.
	sum := md5.Sum(readAll(t, c, lookupPath(t, c, "rafs/c1/lowerdir/normal-file-test/test.sh")))
	if got := hex.EncodeToString(sum[:]); got != "a292e7c6b19c3566a7bbee6a7da632ab" {
		t.Fatalf("md5 of the image's test.sh = %s", got)
	}

	if code, body = apiDo(t, hc, "DELETE", "/api/v1/mount?mountpoint=/rafs/c1/lowerdir", ""); code != 204 {
		t.Fatalf("umount = %d %s", code, body)
	}
	if _, err := c.Lookup(fuse.FUSE_ROOT_ID, "rafs"); err == nil {
		t.Error("rafs/ still visible after the last image was unmounted")
	}
	if code, body = apiDo(t, hc, "DELETE", "/api/v1/mount?mountpoint=/rafs/c1/lowerdir", ""); code != 500 || !strings.Contains(body, `"message"`) {
		t.Errorf("second umount = %d %s; want 500 with a JSON error", code, body)
	}
	if code, _ = apiDo(t, hc, "PUT", "/api/v1/daemon/exit", ""); code != 204 {
		t.Fatalf("exit = %d", code)
	}
	if code := d.wait(t, 2*time.Second); code != 0 {
		t.Fatalf("exit code %d\n%s", code, d.log())
	}
	drv.Close()
	for _, s := range []string{apiSock, vsock} {
		if _, err := os.Stat(s); !os.IsNotExist(err) {
			t.Errorf("%s left behind", s)
		}
	}
}

// TestNydusdImageRoot serves an image at / with the image's backend taken
// from a nydusd configuration file.
func TestNydusdImageRoot(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	v6, _ := filepath.Abs(filepath.Join(fixtures, "v6-2.2"))
	cfgPath := filepath.Join(dir, "nydusd.json")
	cfg := fmt.Sprintf(`{"version":2,"backend":{"type":"localfs","localfs":{"dir":%q}},"rafs":{"validate":true}}`, v6)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	vsock := filepath.Join(dir, "vfs.sock")
	d := startDaemon(t, bin, nil, "virtiofs", "--sock", vsock, "--bootstrap", filepath.Join(v6, "rafs-v6-2.2.boot"), "--config", cfgPath)
	drv, c := connectFUSE(t, d, vsock, testdriver.CloudHypervisor)
	defer drv.Close()
	sum := md5.Sum(readAll(t, c, lookupPath(t, c, "lib.rs")))
	if got := hex.EncodeToString(sum[:]); got != "4709cf8873e419ecedc7d43fdee4a75f" {
		t.Fatalf("md5 of lib.rs = %s", got)
	}
}

// TestNydusdPrefetchFiles: nydusd's `virtiofs --bootstrap --config
// --prefetch-files` prefetches the listed paths into the config's blob
// cache at startup, before any guest connects, and only those.
func TestNydusdPrefetchFiles(t *testing.T) {
	bin := buildBinary(t)
	img, cfg, work, list := prefetchFilesSetup(t, bin)
	vsock := filepath.Join(t.TempDir(), "vfs.sock")
	d := startDaemon(t, bin, nil, "virtiofs", "--sock", vsock, "--bootstrap", img.boot, "--config", cfg, "--prefetch-files", list)
	waitLog(t, d.log, "prefetch done")
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.wait(t, 10*time.Second)
	wantSomeChunksReady(t, work, d.log())
}
