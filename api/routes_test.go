package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/vfs"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNydusdRoutes covers the routes besides Kata's (issue 16 item 7) and
// what the API logs: successful calls at debug, a remount as such.
func TestNydusdRoutes(t *testing.T) {
	var logs syncBuffer
	l := logrus.New()
	l.SetOutput(&logs)
	l.SetLevel(logrus.DebugLevel)
	v := vfs.New(vfs.Options{NoCache: true, Logger: quiet()})
	defer v.Close()
	s, err := New(Options{VFS: v, Version: Version{PackageVer: "v0.1.0"}, Logger: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "another daemon serves its API") {
		t.Fatalf("a second Listen on a live socket: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	d := &daemon{v: v, sock: sock, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		}}}}

	const p = "/rafs/c/lowerdir"
	if r := d.do(t, "POST", "/api/v1/mount?mountpoint="+p, mountBody("rafs", bootstrap, localfsConfig(t))); r.status != http.StatusNoContent {
		t.Fatalf("mount: %d %s", r.status, r.body)
	}
	if r := d.do(t, "PUT", "/api/v1/mount?mountpoint="+p, mountBody("rafs", bootstrap, localfsConfig(t))); r.status != http.StatusNoContent {
		t.Fatalf("remount: %d %s", r.status, r.body)
	}
	tests := []struct {
		method, uri string
		status      int
		check       func(t *testing.T, body []byte)
	}{
		{"GET", "/api/v1/daemon/backend?mountpoint=" + p, 200, func(t *testing.T, b []byte) {
			var sup superInfo
			if err := json.Unmarshal(b, &sup); err != nil || sup.Version != 5 || len(sup.BlobIDs) != 1 || sup.Digester != "sha256" {
				t.Errorf("backend = %s (%v)", b, err)
			}
		}},
		{"PUT", "/api/v1/daemon/start", 204, nil},
		{"GET", "/api/v2/daemon", 200, func(t *testing.T, b []byte) {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil || m["state"] != "RUNNING" || m["backend_collection"] != nil || m["version"] == nil {
				t.Errorf("v2 daemon = %s (%v)", b, err)
			}
		}},
		{"PUT", "/api/v2/daemon", 204, nil},
		{"GET", "/api/v2/blobs?domain_id=d", 501, nil},
		{"DELETE", "/api/v2/blobs?domain_id=d&blob_id=b", 501, nil},
	}
	for _, tc := range tests {
		body := ""
		if tc.uri == "/api/v2/daemon" && tc.method == "PUT" {
			body = `{"log_level":"debug"}`
		}
		r := d.do(t, tc.method, tc.uri, body)
		if r.status != tc.status {
			t.Errorf("%s %s = %d %s, want %d", tc.method, tc.uri, r.status, r.body, tc.status)
			continue
		}
		if tc.check != nil {
			tc.check(t, r.body)
		}
	}
	log := logs.String()
	for _, want := range []string{`msg="api: mounted"`, `msg="api: remounted"`, `msg="api: ok" method=GET status=200 uri=/api/v2/daemon`,
		`msg="api: start requested; the daemon is already running"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
	if strings.Count(log, `msg="api: mounted"`) != 1 {
		t.Errorf("the remount was logged as a mount:\n%s", log)
	}
}
