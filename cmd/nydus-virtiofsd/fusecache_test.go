package main

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
		return writeConfig(t, registryCacheConfig(host, reg.Repo, reg.AuthB64(), work, `{"validate":true}`))
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

// TestFuseConfigPrefetch: `fuse --config` starts the prefetch its config
// asks for (rafs.prefetch with prefetch_all), as the daemon's mounts do:
// a mount that reads nothing fills the cache by itself, and a second
// mount whose registry is down then reads every file from it.
func TestFuseConfigPrefetch(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root for a direct FUSE mount")
	}
	bin := buildBinary(t)
	imgs := remoteImages(t, bin)
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{})
	registryBlobs(t, reg, imgs)
	work := t.TempDir()
	config := func(host string, prefetch bool) string {
		return writeConfig(t, registryCacheConfig(host, reg.Repo, "", work,
			fmt.Sprintf(`{"validate":true,"prefetch":{"enable":%v,"prefetch_all":%v,"threads":2}}`, prefetch, prefetch)))
	}
	up, down := config(reg.Host, true), config(fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)), false)
	for _, img := range imgs {
		t.Run(img.name, func(t *testing.T) {
			t.Run("prefetch, nothing read", func(t *testing.T) {
				_, out := fuseMount(t, bin, img.boot, up)
				deadline := time.Now().Add(30 * time.Second)
				for id := range img.blobs {
					for !allReady(filepath.Join(work, id+".blob.data.chunk_map")) && time.Now().Before(deadline) {
						time.Sleep(50 * time.Millisecond)
					}
				}
				if !strings.Contains(out.String(), "prefetch started") {
					t.Errorf("no prefetch in the log:\n%s", out.String())
				}
			})
			t.Run("registry down", func(t *testing.T) {
				mnt, out := fuseMount(t, bin, img.boot, down)
				for path, want := range img.md5s {
					b, err := os.ReadFile(filepath.Join(mnt, path))
					sum := md5.Sum(b)
					if err != nil || hex.EncodeToString(sum[:]) != want {
						t.Errorf("%s: %v, md5 %x want %s\n%s", path, err, sum, want, out.String())
					}
				}
			})
		})
	}
}

// prefetchFilesSetup serves the created test image's blob from a loopback
// registry and returns the image, a config with a blob cache in work and
// no prefetch of its own, and a --prefetch-files list naming /usr/lib (a
// 700 KiB library; the image also holds a 3 MiB file).
func prefetchFilesSetup(t *testing.T, bin string) (img remoteImage, cfg, work, list string) {
	for _, i := range remoteImages(t, bin) {
		if i.name == "created" {
			img = i
		}
	}
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{})
	registryBlobs(t, reg, []remoteImage{img})
	work = t.TempDir()
	cfg = writeConfig(t, registryCacheConfig(reg.Host, reg.Repo, "", work, `{"validate":true}`))
	list = filepath.Join(t.TempDir(), "prefetch.list")
	if err := os.WriteFile(list, []byte("/usr/lib\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return img, cfg, work, list
}

// waitLog waits up to 30 s for line in a daemon's log.
func waitLog(t *testing.T, log func() string, line string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(log(), line) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within 30 s:\n%s", line, log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantSomeChunksReady checks the one chunk map in work, flushed by a
// daemon that stopped: some chunks are marked (the listed file's), not all.
func wantSomeChunksReady(t *testing.T, work, log string) {
	t.Helper()
	maps, _ := filepath.Glob(filepath.Join(work, "*.chunk_map"))
	if len(maps) != 1 {
		t.Fatalf("chunk maps in work_dir: %q, want the data blob's\n%s", maps, log)
	}
	b, err := os.ReadFile(maps[0])
	if err != nil || len(b) <= 4096 {
		t.Fatalf("chunk map %s: %d bytes, %v", maps[0], len(b), err)
	}
	ready := 0
	for _, c := range b[4096:] {
		ready += bits.OnesCount8(c)
	}
	if ready == 0 || allReady(maps[0]) {
		t.Errorf("%s: %d chunks ready, all ready %v; want the listed file's only\n%s", maps[0], ready, allReady(maps[0]), log)
	}
}

// TestFusePrefetchFiles: `fuse --prefetch-files` fetches the listed paths
// into the blob cache although the config asks for no prefetch and nothing
// is read, and only those.
func TestFusePrefetchFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root for a direct FUSE mount")
	}
	bin := buildBinary(t)
	img, cfg, work, list := prefetchFilesSetup(t, bin)
	var out *testsvc.Buffer
	t.Run("mount", func(t *testing.T) { // unmounted when it ends: the chunk map is flushed
		_, out = fuseMountArgs(t, bin, img.boot, cfg, "--prefetch-files", list)
		waitLog(t, out.String, "prefetch done")
	})
	if !t.Failed() {
		wantSomeChunksReady(t, work, out.String())
	}
}

// allReady reports whether the chunk map at p says every chunk is cached
// (nydusd's all_ready word at offset 12).
func allReady(p string) bool {
	b, err := os.ReadFile(p)
	return err == nil && len(b) >= 16 && binary.LittleEndian.Uint32(b[12:]) == 0x4D4D4150
}

// TestUnpackConfigBlobcache: `unpack --config` with a blobcache section
// closes its cache before it exits, so what it fetched is marked on disk:
// a second unpack whose registry is down writes the same tar from it.
func TestUnpackConfigBlobcache(t *testing.T) {
	bin := buildBinary(t)
	imgs := remoteImages(t, bin)
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{})
	registryBlobs(t, reg, imgs)
	work := t.TempDir()
	config := func(host string) string {
		return writeConfig(t, registryCacheConfig(host, reg.Repo, "", work, ""))
	}
	up, down := config(reg.Host), config(fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)))
	for _, img := range imgs {
		t.Run(img.name, func(t *testing.T) {
			var tars [2][]byte
			for i, cfg := range []string{up, down} {
				tar := filepath.Join(t.TempDir(), "out.tar")
				if out, err := exec.Command(bin, "unpack", "--bootstrap", img.boot, "--config", cfg, "--output", tar).CombinedOutput(); err != nil {
					t.Fatalf("unpack (registry up: %v): %v\n%s", i == 0, err, out)
				}
				b, err := os.ReadFile(tar)
				if err != nil {
					t.Fatal(err)
				}
				tars[i] = b
			}
			if !bytes.Equal(tars[0], tars[1]) {
				t.Fatal("the tar from the cache differs from the tar from the registry")
			}
		})
	}
}

// writeConfig writes a daemon config to a file of the test's own.
func writeConfig(t *testing.T, c string) string {
	p := filepath.Join(t.TempDir(), "nydusd.json")
	if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// registryCacheConfig is a v2 config that reads repo from the registry at
// host over HTTP (auth: base64 user:password, "" for none; no retries)
// into a blobcache in work; rafs is the "rafs" section ("" for none).
func registryCacheConfig(host, repo, auth, work, rafs string) string {
	reg := fmt.Sprintf(`"scheme":"http","host":%q,"repo":%q,"timeout":5,"retry_limit":0`, host, repo)
	if auth != "" {
		reg += fmt.Sprintf(`,"auth":%q`, auth)
	}
	c := fmt.Sprintf(`{"version":2,"backend":{"type":"registry","registry":{%s}},"cache":{"type":"blobcache","filecache":{"work_dir":%q}}`, reg, work)
	if rafs != "" {
		c += `,"rafs":` + rafs
	}
	return c + "}"
}
