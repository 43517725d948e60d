package main

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// TestFuseConfigBlobcache: `fuse --config` with a blobcache section keeps
// what it fetched from a real registry in work_dir, so a second mount
// whose registry is down reads every file from the cache.
func TestFuseConfigBlobcache(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root for a direct FUSE mount")
	}
	bin := buildBinary(t)
	imgs := remoteImages(t, bin)
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
	registryBlobs(t, reg, imgs)
	work := t.TempDir()
	config := func(host string) string {
		c := fmt.Sprintf(`{"version":2,"backend":{"type":"registry","registry":{"scheme":"http","host":%q,"repo":%q,"auth":%q,"timeout":5,"retry_limit":0}},`+
			`"cache":{"type":"blobcache","filecache":{"work_dir":%q}},"rafs":{"validate":true}}`, host, reg.Repo, reg.AuthB64(), work)
		p := filepath.Join(t.TempDir(), "nydusd.json")
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	up, down := config(reg.Host), config(fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)))
	readAll := func(t *testing.T, cfg string) {
		for _, img := range imgs {
			t.Run(img.name, func(t *testing.T) {
				mnt, out := fuseMount(t, bin, img.boot, cfg)
				for path, want := range img.md5s {
					b, err := os.ReadFile(filepath.Join(mnt, path))
					sum := md5.Sum(b)
					if err != nil || hex.EncodeToString(sum[:]) != want {
						t.Errorf("%s: %v, md5 %x want %s\n%s", path, err, sum, want, out.String())
					}
				}
			})
		}
	}
	t.Run("registry up", func(t *testing.T) { readAll(t, up) })
	if t.Failed() {
		return
	}
	for _, img := range imgs {
		for id := range img.blobs {
			if _, err := os.Stat(filepath.Join(work, id+".blob.data.chunk_map")); err != nil {
				t.Fatalf("image %s blob %s: no chunk map in work_dir: %v", img.name, id, err)
			}
		}
	}
	t.Run("registry down", func(t *testing.T) { readAll(t, down) })
	// check verifies the bytes the backend serves (what it checks is the
	// blob, not our copy of it), so it needs the registry; with the cache
	// section it opens and checks every image all the same.
	t.Run("check, cache section", func(t *testing.T) {
		for _, img := range imgs {
			out, err := exec.Command(bin, "check", "--bootstrap", img.boot, "--config", up).CombinedOutput()
			if err != nil || strings.Contains(string(out), "metadata only") {
				t.Errorf("check %s: %v\n%s", img.name, err, out)
			}
		}
	})
}
