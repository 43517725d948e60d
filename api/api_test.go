package api

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/hostmount"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vfs"
)

const fixtureDir = "../rafs/testdata/fixtures/nydus/v5-repeatable"

var (
	bootstrap = filepath.Join(fixtureDir, "sha256-nocompress-repeatable")
	blobDir   = filepath.Join(fixtureDir, "blobs")
)

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// snapshotterConfig is the nydusd v1 config string nydus-snapshotter
// hands Kata (FuseDaemonConfig), with the given backend.
func snapshotterConfig(backendType string, backendConfig map[string]any) string {
	c := map[string]any{
		"device": map[string]any{
			"id":      "/42",
			"backend": map[string]any{"type": backendType, "config": backendConfig},
			"cache": map[string]any{"type": "blobcache", "config": map[string]any{
				"work_dir": "/var/lib/containerd-nydus/cache", "disable_indexed_map": false}},
		},
		"mode": "direct", "digest_validate": false, "iostats_files": false, "enable_xattr": true,
		"fs_prefetch": map[string]any{"enable": true, "prefetch_all": true, "threads_count": 8, "merging_size": 1048576},
	}
	b, _ := json.Marshal(c)
	return string(b)
}

func localfsConfig(t testing.TB) string {
	dir, err := filepath.Abs(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	return snapshotterConfig("localfs", map[string]any{"dir": dir})
}

type daemon struct {
	v      *vfs.VFS
	sock   string
	client *http.Client
	exited atomic.Int32
	level  atomic.Value
}

// startDaemon serves the API on a unix socket in a temporary directory.
func startDaemon(t testing.TB) *daemon { return startDaemonWith(t, nil) }

// startDaemonWith is startDaemon with more options set by edit.
func startDaemonWith(t testing.TB, edit func(*Options)) *daemon {
	t.Helper()
	d := &daemon{v: vfs.New(vfs.Options{NoCache: true, Logger: quiet()}), sock: filepath.Join(t.TempDir(), "nydusd-api.sock")}
	o := Options{VFS: d.v, ID: "", Version: Version{PackageVer: "v0.1.0", GitCommit: "abc", BuildTime: "now", Profile: "release", Rustc: "go"},
		SetLogLevel: func(l string) error { d.level.Store(l); return nil },
		Exit:        func() { d.exited.Add(1) },
		Logger:      quiet()}
	if edit != nil {
		edit(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		d.v.Close()
	})
	d.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.sock)
		}}}
	return d
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request the way Kata's clients do (host "unix" as the Go
// runtime; runtime-rs' hyper client differs only in the Host header).
func (d *daemon) do(t testing.TB, method, uri, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://unix"+uri, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	// nydusd's conventions hold for every response.
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, uri, ct)
	}
	if sv := resp.Header.Get("Server"); sv != "Nydus API" {
		t.Errorf("%s %s: Server %q", method, uri, sv)
	}
	if resp.StatusCode >= 400 {
		var e struct{ Code, Message string }
		if err := json.Unmarshal(b, &e); err != nil || e.Code != "UNDEFINED" || e.Message == "" {
			t.Errorf("%s %s: %d with error body %q (%v)", method, uri, resp.StatusCode, b, err)
		}
	}
	return reply{resp.StatusCode, resp.Header, b}
}

func (r reply) message() string {
	var e struct{ Message string }
	json.Unmarshal(r.body, &e)
	return e.Message
}

func mountBody(fsType, source, config string) string {
	b, _ := json.Marshal(map[string]string{"fs_type": fsType, "source": source, "config": config})
	return string(b)
}

// runtimeRsEscape percent-encodes every byte but A-Za-z0-9-._~, as
// runtime-rs does for the mountpoint.
func runtimeRsEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

type daemonInfoReply struct {
	ID         *string `json:"id"`
	Supervisor *string `json:"supervisor"`
	State      string  `json:"state"`
	Version    struct {
		PackageVer, GitCommit, BuildTime, Profile, Rustc *string
	} `json:"-"`
	RawVersion        map[string]json.RawMessage `json:"version"`
	BackendCollection map[string]struct {
		BackendType string          `json:"backend_type"`
		Mountpoint  string          `json:"mountpoint"`
		MountedTime string          `json:"mounted_time"`
		Config      json.RawMessage `json:"config"`
	} `json:"backend_collection"`
}

func (d *daemon) info(t testing.TB) daemonInfoReply {
	t.Helper()
	r := d.do(t, "GET", "/api/v1/daemon", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /api/v1/daemon: %d %s", r.status, r.body)
	}
	var info daemonInfoReply
	if err := json.Unmarshal(r.body, &info); err != nil {
		t.Fatalf("daemon info %s: %v", r.body, err)
	}
	// runtime-rs needs all five version fields, as strings.
	for _, k := range []string{"package_ver", "git_commit", "build_time", "profile", "rustc"} {
		var s string
		if err := json.Unmarshal(info.RawVersion[k], &s); err != nil {
			t.Errorf("version.%s: %s (%v)", k, info.RawVersion[k], err)
		}
	}
	return info
}

// kataSequence replays a Kata runtime: poll the state, mount the shared
// directory at /containers, mount a container image, unmount it.
func kataSequence(t *testing.T, escape func(string) string) {
	d := startDaemon(t)
	info := d.info(t)
	if info.State != "RUNNING" || info.ID != nil || info.Supervisor != nil || len(info.BackendCollection) != 0 {
		t.Fatalf("fresh daemon info %+v", info)
	}
	shared := t.TempDir()
	if err := os.WriteFile(filepath.Join(shared, "f"), []byte("shared"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := d.do(t, "POST", "/api/v1/mount?mountpoint="+escape("/containers"), mountBody("passthrough_fs", shared, "")); r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("mount /containers: %d %s", r.status, r.body)
	}
	const cid = "4f1e0c+b.x-y_z"
	lower := "/rafs/" + cid + "/lowerdir"
	if r := d.do(t, "POST", "/api/v1/mount?mountpoint="+escape(lower), mountBody("rafs", bootstrap, localfsConfig(t))); r.status != http.StatusNoContent {
		t.Fatalf("mount %s: %d %s", lower, r.status, r.body)
	}
	info = d.info(t)
	if len(info.BackendCollection) != 2 {
		t.Fatalf("backend_collection %+v", info.BackendCollection)
	}
	if b := info.BackendCollection["/containers"]; b.BackendType != "PassthroughFs" || b.Mountpoint != "/containers" || string(b.Config) != "null" {
		t.Errorf("/containers: %+v", b)
	}
	b := info.BackendCollection[lower]
	if b.BackendType != "Rafs" || b.Mountpoint != lower {
		t.Errorf("%s: %+v", lower, b)
	}
	if _, err := time.Parse(time.RFC3339Nano, b.MountedTime); err != nil {
		t.Errorf("mounted_time %q: %v", b.MountedTime, err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b.Config, &cfg); err != nil || cfg["device"] == nil {
		t.Errorf("config %s: %v", b.Config, err)
	}
	// The image is served where the guest will look.
	fs, err := d.v.FS(lower)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fs.(*rafs.FS); !ok {
		t.Fatalf("%s serves %T", lower, fs)
	}
	if r := d.do(t, "DELETE", "/api/v1/mount?mountpoint="+escape(lower), ""); r.status != http.StatusNoContent {
		t.Fatalf("umount: %d %s", r.status, r.body)
	}
	if _, err := d.v.Info(lower); !errors.Is(err, vfs.ErrNotFound) {
		t.Fatalf("after DELETE: %v", err)
	}
	if info := d.info(t); len(info.BackendCollection) != 1 {
		t.Fatalf("backend_collection after DELETE: %+v", info.BackendCollection)
	}
}

func TestKataGoRuntime(t *testing.T) { kataSequence(t, func(s string) string { return s }) }

func TestKataRuntimeRs(t *testing.T) { kataSequence(t, runtimeRsEscape) }

func TestErrors(t *testing.T) {
	d := startDaemon(t)
	shared := t.TempDir()
	if r := d.do(t, "POST", "/api/v1/mount?mountpoint=/containers", mountBody("passthrough", shared, "")); r.status != http.StatusNoContent {
		t.Fatalf("mount: %d %s", r.status, r.body)
	}
	tests := []struct {
		name, method, uri, body string
		status                  int
		message                 string
	}{
		{"unknown route", "GET", "/api/v1/nothing", "", 404, "no route"},
		{"v2 blobs", "PUT", "/api/v2/blobs", "{}", 501, "fscache"},
		{"events not served", "GET", "/api/v1/daemon/events", "", 404, "no route"},
		{"backend of a passthrough mount", "GET", "/api/v1/daemon/backend?mountpoint=/nothing", "", 500, "/nothing"},
		{"backend without mountpoint", "GET", "/api/v1/daemon/backend", "", 400, "mountpoint"},
		{"start GET", "GET", "/api/v1/daemon/start", "", 400, "not allowed"},
		{"mount GET", "GET", "/api/v1/mount?mountpoint=/containers", "", 400, "not allowed"},
		{"daemon DELETE", "DELETE", "/api/v1/daemon", "", 400, "not allowed"},
		{"bad JSON", "POST", "/api/v1/mount?mountpoint=/x", "{", 400, "JSON"},
		{"no mountpoint", "POST", "/api/v1/mount", mountBody("rafs", bootstrap, ""), 400, "mountpoint"},
		{"no source", "POST", "/api/v1/mount?mountpoint=/x", `{"fs_type":"rafs","config":""}`, 400, "source"},
		{"no config", "POST", "/api/v1/mount?mountpoint=/x", `{"fs_type":"rafs","source":"/b"}`, 400, "config"},
		{"empty fs_type", "POST", "/api/v1/mount?mountpoint=/x", `{"source":"/b","config":""}`, 500, "only 'rafs' and 'passthrough_fs' are supported"},
		{"fs_type erofs", "POST", "/api/v1/mount?mountpoint=/x", mountBody("erofs", "/b", ""), 500, "only 'rafs' and 'passthrough_fs' are supported"},
		{"occupied", "POST", "/api/v1/mount?mountpoint=%2Fcontainers", mountBody("passthroughfs", shared, ""), 500, "occupied"},
		{"nested", "POST", "/api/v1/mount?mountpoint=/containers/sub", mountBody("passthrough_fs", shared, ""), 500, "inside a mounted"},
		{"umount unknown", "DELETE", "/api/v1/mount?mountpoint=/rafs/none/lowerdir", "", 500, "no filesystem is mounted"},
		{"registry without repo", "POST", "/api/v1/mount?mountpoint=/rafs/r/lowerdir", mountBody("rafs", bootstrap, snapshotterConfig("registry", map[string]any{"host": "h"})), 400, "registry backend needs host and repo"},
		{"registry bad auth", "POST", "/api/v1/mount?mountpoint=/rafs/r/lowerdir", mountBody("rafs", bootstrap, snapshotterConfig("registry", map[string]any{"host": "h", "repo": "r", "auth": "c2VjcmV0!"})), 400, "auth is not valid base64"},
		{"unknown backend", "POST", "/api/v1/mount?mountpoint=/rafs/r/lowerdir", mountBody("rafs", bootstrap, `{"version":2,"backend":{"type":"ftp"}}`), 400, `unknown backend type "ftp"`},
		{"relative socket", "POST", "/api/v1/mount?mountpoint=/rafs/r/lowerdir", mountBody("rafs", bootstrap, `{"version":2,"backend":{"type":"http-proxy","http-proxy":{"addr":"rel/sock"}}}`), 400, "absolute unix socket path"},
		{"empty rafs config", "POST", "/api/v1/mount?mountpoint=/rafs/r/lowerdir", mountBody("rafs", bootstrap, ""), 500, "config"},
		{"missing bootstrap", "POST", "/api/v1/mount?mountpoint=/rafs/r/lowerdir", mountBody("rafs", "/nonexistent/image.boot", localfsConfig(t)), 500, "no such file"},
		{"missing share", "POST", "/api/v1/mount?mountpoint=/s", mountBody("passthrough_fs", "/nonexistent/share", ""), 500, "no such file"},
		{"relative prefetch", "POST", "/api/v1/mount?mountpoint=/rafs/r/lowerdir", `{"fs_type":"rafs","source":"/b","config":"","prefetch_files":["etc"]}`, 500, "absolute"},
		{"remount passthrough", "PUT", "/api/v1/mount?mountpoint=/containers", mountBody("rafs", bootstrap, localfsConfig(t)), 501, "only a RAFS image"},
		{"remount unknown", "PUT", "/api/v1/mount?mountpoint=/rafs/none/lowerdir", mountBody("rafs", bootstrap, localfsConfig(t)), 500, "no filesystem is mounted"},
		{"bad log level", "PUT", "/api/v1/daemon", `{"log_level":"loud"}`, 400, "log_level"},
		{"no log level", "PUT", "/api/v1/daemon", `{}`, 400, "log_level"},
		{"metrics unknown id", "GET", "/api/v1/metrics?id=/nope", "", 404, "no counter"},
		{"metrics", "GET", "/api/v1/metrics", "", 501, "not collected"},
		{"metrics backend", "GET", "/api/v1/metrics/backend?id=/containers", "", 501, "not collected"},
		{"metrics inflight", "GET", "/api/v1/metrics/inflight", "", 501, "not collected"},
		{"metrics unknown kind", "GET", "/api/v1/metrics/other", "", 404, "no route"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := d.do(t, tc.method, tc.uri, tc.body)
			if r.status != tc.status || !strings.Contains(r.message(), tc.message) {
				t.Fatalf("%d %s, want %d and a message with %q", r.status, r.body, tc.status, tc.message)
			}
		})
	}
	// Nothing but the first mount got in.
	if ms := d.v.Mounts(); len(ms) != 1 || ms[0].Path != "/containers" {
		t.Fatalf("mounts %+v", ms)
	}
}

func TestDaemonLogLevelAndExit(t *testing.T) {
	d := startDaemon(t)
	if r := d.do(t, "PUT", "/api/v1/daemon", `{"log_level":"debug"}`); r.status != http.StatusNoContent {
		t.Fatalf("PUT daemon: %d %s", r.status, r.body)
	}
	if l, _ := d.level.Load().(string); l != "debug" {
		t.Fatalf("log level %q", l)
	}
	if r := d.do(t, "GET", "/api/v1/daemon/exit", ""); r.status != http.StatusBadRequest {
		t.Fatalf("GET exit: %d", r.status)
	}
	if r := d.do(t, "PUT", "/api/v1/daemon/exit", ""); r.status != http.StatusNoContent {
		t.Fatalf("PUT exit: %d %s", r.status, r.body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.exited.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if d.exited.Load() != 1 {
		t.Fatalf("exit callback ran %d times", d.exited.Load())
	}
}

// TestRemount swaps a RAFS mount's image (PUT /api/v1/mount) in place.
func TestRemount(t *testing.T) {
	d := startDaemon(t)
	const p = "/rafs/c/lowerdir"
	if r := d.do(t, "POST", "/api/v1/mount?mountpoint="+p, mountBody("rafs", bootstrap, localfsConfig(t))); r.status != http.StatusNoContent {
		t.Fatalf("mount: %d %s", r.status, r.body)
	}
	before, _ := d.v.FS(p)
	// The v6 fixture keeps its blob beside the bootstrap.
	v6 := "../rafs/testdata/fixtures/nydus/v6-2.2"
	boot := filepath.Join(v6, "rafs-v6-2.2.boot")
	v6dir, err := filepath.Abs(v6)
	if err != nil {
		t.Fatal(err)
	}
	v6cfg := snapshotterConfig("localfs", map[string]any{"dir": v6dir})
	if r := d.do(t, "PUT", "/api/v1/mount?mountpoint="+p, mountBody("rafs", boot, v6cfg)); r.status != http.StatusNoContent {
		t.Fatalf("remount: %d %s", r.status, r.body)
	}
	after, _ := d.v.FS(p)
	if after == before {
		t.Fatal("remount kept the old filesystem")
	}
	info, err := d.v.Info(p)
	if err != nil || info.Type != BackendRafs {
		t.Fatalf("%+v, %v", info, err)
	}
}

// TestKernelKataLayout replays the Go runtime's sequence and reads both
// mounts through the host kernel's FUSE client.
func TestKernelKataLayout(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "kernel FUSE mount needs root (DirectMount)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Skip(t, "no /dev/fuse")
	}
	d := startDaemon(t)
	mnt := t.TempDir()
	srv, err := hostmount.Mount(d.v, mnt, &fuse.MountOptions{FsName: "vfs", Name: "vfs", DirectMount: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	shared := t.TempDir()
	if err := os.WriteFile(filepath.Join(shared, "f"), []byte("shared"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.info(t)
	if r := d.do(t, "POST", "/api/v1/mount?mountpoint=/containers", mountBody("passthrough_fs", shared, "")); r.status != http.StatusNoContent {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := d.do(t, "POST", "/api/v1/mount?mountpoint=/rafs/c1/lowerdir", mountBody("rafs", bootstrap, localfsConfig(t))); r.status != http.StatusNoContent {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "containers", "f")); err != nil || string(b) != "shared" {
		t.Fatalf("read %q, %v", b, err)
	}
	// The fixture's hardlink-test/foo, against its .result md5.
	b, err := os.ReadFile(filepath.Join(mnt, "rafs", "c1", "lowerdir", "hardlink-test", "foo"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := os.ReadFile(bootstrap + ".result")
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(b)
	if want := hex.EncodeToString(sum[:]) + "  /hardlink-test/foo"; !strings.Contains(string(res), want) {
		t.Fatalf("md5 line %q not in the fixture result", want)
	}
	if r := d.do(t, "DELETE", "/api/v1/mount?mountpoint=/rafs/c1/lowerdir", ""); r.status != http.StatusNoContent {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if _, err := os.Stat(filepath.Join(mnt, "rafs")); !os.IsNotExist(err) {
		t.Fatalf("after DELETE: %v", err)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "null"},
		{"version = 2", "null"},
		{`{"device":{"backend":{"type":"registry","config":{"host":"h","auth":"c2VjcmV0","registry_token":"t"}}}}`,
			`{"device":{"backend":{"config":{"host":"h"},"type":"registry"}}}`},
		{`{"version":2,"backend":{"oss":{"access_key_id":"id","access_key_secret":"s"}}}`,
			`{"backend":{"oss":{"access_key_id":"id"}},"version":2}`},
	}
	for _, tc := range tests {
		b, err := json.Marshal(RedactConfig(tc.in))
		if err != nil || string(b) != tc.want {
			t.Errorf("RedactConfig(%s) = %s, %v; want %s", tc.in, b, err, tc.want)
		}
	}
}
