package main

import (
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/metrics"
)

// TestFuseAPIAndCtl mounts an image on the host with fuse --apisock and
// --metrics-addr, reads one file through the mount, and inspects the
// daemon with ctl (tables and --raw) and GET /metrics.
func TestFuseAPIAndCtl(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root for direct FUSE mounts")
	}
	bin := buildBinary(t)
	boot, dir, _ := v6Image(t)
	mnt := t.TempDir()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "fuse", "--bootstrap", boot, "--blob-dir", dir, "--mountpoint", mnt, "--apisock", sock,
		"--metrics-addr", maddr, "--log-format", "json")
	var stderr syncWriter
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	for i := 0; !strings.Contains(stderr.String(), "serving RAFS"); i++ {
		if i > 400 {
			t.Fatalf("not mounted after 10 s: %s", stderr.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("--log-format json: line %q: %v", line, err)
		}
	}

	// One regular file, read once.
	var file string
	var size int64
	filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && file == "" {
			if fi, err := d.Info(); err == nil && fi.Size() > 0 {
				file, size = p, fi.Size()
			}
		}
		return nil
	})
	if file == "" {
		t.Fatal("no regular file in the image")
	}
	b, err := os.ReadFile(file)
	if err != nil || int64(len(b)) != size {
		t.Fatalf("read %s: %d bytes, %v", file, len(b), err)
	}

	ctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"ctl", "--sock", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	var g metrics.Global
	if err := json.Unmarshal([]byte(ctl("--raw", "metrics")), &g); err != nil {
		t.Fatal(err)
	}
	if g.NrOpens != 1 || g.DataRead != uint64(size) || g.FopHits[metrics.FopRead] == 0 || g.ID != "/" {
		t.Errorf("after reading %d bytes of one file: %+v", size, g)
	}
	checks := []struct {
		args []string
		want []string
	}{
		{[]string{"info"}, []string{"State:", "RUNNING", "MOUNTPOINT", "Rafs"}},
		{[]string{"mounts"}, []string{"MOUNTPOINT", "/"}},
		{[]string{"metrics"}, []string{"Files opened:", "1", "FOP", "read", "getattr"}},
		{[]string{"metrics", "--id", "/"}, []string{"Mount:", "Data read:"}},
		{[]string{"inflight"}, []string{"no requests in flight"}},
		{[]string{"events"}, []string{"Errors:"}},
		{[]string{"--raw", "info"}, []string{`"state": "RUNNING"`}},
	}
	for _, c := range checks {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			out := ctl(c.args...)
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("no %q in:\n%s", w, out)
				}
			}
		})
	}
	t.Run("unknown id", func(t *testing.T) {
		out, err := exec.Command(bin, "ctl", "--sock", sock, "metrics", "--id", "/nope").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no counter found") {
			t.Errorf("%v: %s", err, out)
		}
	})
	t.Run("prometheus on --metrics-addr", func(t *testing.T) {
		resp, err := http.Get("http://" + maddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, w := range []string{`nydus_virtiofsd_fop_hits_total{fop="open",mount="/"} 1`, `nydus_virtiofsd_mounts 1`, "process_open_fds"} {
			if !strings.Contains(string(body), w) {
				t.Errorf("no %q in\n%s", w, body)
			}
		}
	})
}

// TestDaemonMetricsAddr runs the virtio-fs daemon on each command line
// with --metrics-addr, reads a file from a guest (testdriver) and finds
// the requests in GET /metrics over TCP; in nydusd's mode also through
// ctl on the API socket.
func TestDaemonMetricsAddr(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		name   string
		nydusd bool
	}{{"virtiofsd", false}, {"nydusd virtiofs", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sock := filepath.Join(dir, "vfs.sock")
			api := filepath.Join(dir, "api.sock")
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			maddr := l.Addr().String()
			l.Close()
			args := []string{"--socket-path=" + sock, "--shared-dir=" + shareDir(t), "--sandbox=none", "--metrics-addr=" + maddr}
			if tc.nydusd {
				args = []string{"virtiofs", "--sock", sock, "--apisock", api, "--shared-dir", shareDir(t), "--metrics-addr", maddr}
			}
			d := startDaemon(t, bin, nil, args...)
			drv, c := connectFUSE(t, d, sock, testdriver.QEMU)
			defer drv.Close()
			if got := readFile(t, c, "hello.txt"); got != "hello, guest\n" {
				t.Fatalf("read %q", got)
			}
			resp, err := http.Get("http://" + maddr + "/metrics")
			if err != nil {
				t.Fatalf("%v\n%s", err, d.log())
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, w := range []string{
				`nydus_virtiofsd_fuse_requests_total{opcode="READ"} 1`,
				`nydus_virtiofsd_fuse_requests_total{opcode="OPEN"} 1`,
				`nydus_virtiofsd_fuse_read_bytes_total 13`,
				`nydus_virtiofsd_fop_hits_total{fop="read",mount="/"} 1`,
				`nydus_virtiofsd_virtqueue_inflight_requests{queue="1"} 0`,
			} {
				if !strings.Contains(string(body), w) {
					t.Errorf("no %q in\n%s", w, body)
				}
			}
			if !tc.nydusd {
				return
			}
			out, err := exec.Command(bin, "ctl", "--sock", api, "--raw", "metrics").CombinedOutput()
			var g metrics.Global
			if err != nil || json.Unmarshal(out, &g) != nil {
				t.Fatalf("ctl: %v\n%s", err, out)
			}
			if g.NrOpens != 1 || g.DataRead != 13 || g.FopHits[metrics.FopRead] != 1 {
				t.Errorf("ctl metrics: %+v", g)
			}
		})
	}
}
