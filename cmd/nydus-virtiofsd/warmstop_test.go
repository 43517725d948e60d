package main

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// TestNydusdCacheWarmAfterStop: Kata's flow with a blob cache (nydusd's
// virtiofs mode, the image mounted through the API, read by a guest), the
// guest's last reads right before the VMM goes away, and the daemon left
// to exit by itself or sent SIGTERM at once (Kata's Go runtime): the next
// daemon, with the registry gone, serves every file the first one served
// from the cache it left.
func TestNydusdCacheWarmAfterStop(t *testing.T) {
	bin := buildBinary(t)
	var img remoteImage
	for _, i := range remoteImages(t, bin) {
		if i.name == "created" {
			img = i
		}
	}
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{})
	registryBlobs(t, reg, []remoteImage{img})
	run := func(t *testing.T, host, work string, sigterm bool) {
		dir := t.TempDir()
		apiSock, vsock := filepath.Join(dir, "api.sock"), filepath.Join(dir, "vfs.sock")
		d := startDaemon(t, bin, nil, "virtiofs", "--log-level", "info", "--apisock", apiSock, "--sock", vsock)
		hc := apiClient(apiSock)
		req, _ := json.Marshal(map[string]string{"fs_type": "rafs", "source": img.boot,
			"config": registryCacheConfig(host, reg.Repo, "", work, `{"validate":true}`)})
		if code, body := apiDo(t, hc, "POST", "/api/v1/mount?mountpoint=/rafs/c/lowerdir", string(req)); code != 204 {
			t.Fatalf("mount = %d %s", code, body)
		}
		drv, c := connectFUSE(t, d, vsock, testdriver.QEMU)
		for path, want := range img.md5s {
			sum := md5.Sum(readAll(t, c, lookupPath(t, c, "rafs/c/lowerdir/"+path)))
			if got := hex.EncodeToString(sum[:]); got != want {
				t.Errorf("%s: md5 %s, want %s\n%s", path, got, want, d.log())
			}
		}
		// At once: the runtime stops the daemon while the VMM is still
		// connected (so that SIGTERM, not the VMM going, ends it), or the
		// VMM goes.
		if sigterm {
			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		} else {
			drv.Close()
		}
		if code := d.wait(t, 10*time.Second); code != 0 {
			t.Fatalf("exit code %d\n%s", code, d.log())
		}
		if sigterm {
			drv.Close()
		}
	}
	for _, sigterm := range []bool{false, true} {
		t.Run(fmt.Sprintf("sigterm=%v", sigterm), func(t *testing.T) {
			work := t.TempDir()
			t.Run("registry up", func(t *testing.T) { run(t, reg.Host, work, sigterm) })
			t.Run("registry down", func(t *testing.T) { run(t, fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)), work, sigterm) })
		})
	}
}
