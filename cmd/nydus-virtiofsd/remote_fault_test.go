package main

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// TestFaultInjectorDaemon mounts the created image with `fuse --config`
// whose registry (token auth) sits behind the fault injector. While every
// data request fails, a read gets EIO (never wrong bytes) within the
// configured timeouts and the daemon keeps serving; once the backend
// recovers the same files read back with the right md5. The daemon's
// debug output never shows a secret.
func TestFaultInjectorDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root for a direct FUSE mount")
	}
	bin := buildBinary(t)
	img := remoteImages(t, bin)[2] // created: zstd, several chunks per file
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthToken})
	registryBlobs(t, reg, []remoteImage{img})
	fi := testsvc.StartFaultInjector(t, "http://"+reg.Host)
	fi.StallFor = 10 * time.Second
	cfgPath := filepath.Join(t.TempDir(), "nydusd.json")
	cfg := fmt.Sprintf(`{"version":2,"backend":{"type":"registry","registry":{"scheme":"http","host":%q,"repo":%q,"auth":%q,"timeout":1,"retry_limit":1}},"rafs":{"validate":true}}`,
		fi.Host, reg.Repo, reg.AuthB64())
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	mnt, out := fuseMount(t, bin, img.boot, cfgPath)
	defer func() {
		checkNoSecrets(t, "fuse", out.String(), []string{reg.Pass, reg.AuthB64()})
		// The check above means something only if requests were logged.
		for _, want := range []string{"backend request", "retrying", "status=401"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("daemon output lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("daemon output:\n%s", out.String())
		}
	}()
	var paths []string
	for p := range img.md5s {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	readAllFiles := func() error {
		for _, p := range paths {
			b, err := os.ReadFile(filepath.Join(mnt, p))
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if sum := md5.Sum(b); hex.EncodeToString(sum[:]) != img.md5s[p] {
				t.Fatalf("%s: wrong bytes served (md5 %x)", p, sum)
			}
		}
		return nil
	}
	// Warm up: the blob's metadata is read once (see the report on
	// rafs/blob.go); the page cache is dropped by the fresh reads below
	// because each fault case reads files not read before.
	if _, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil {
		t.Fatal(err)
	}
	// Overlong last: it is the one fault whose read succeeds, and fills
	// the cache with big.bin.
	for _, f := range []testsvc.Fault{testsvc.Fault5xx, testsvc.FaultReset, testsvc.FaultTruncate,
		testsvc.FaultWrongRange, testsvc.FaultStall, testsvc.FaultOverlong} {
		t.Run(f.String(), func(t *testing.T) {
			fi.Always(f)
			start := time.Now()
			// O_DIRECT is not needed: a failed read leaves nothing cached.
			b, err := os.ReadFile(filepath.Join(mnt, "big.bin"))
			fi.Always(testsvc.FaultNone)
			if f == testsvc.FaultOverlong {
				// Every byte of the range asked for arrives before the
				// excess: the blob cache lands each chunk as its bytes
				// come in (storage docs, "Fetching"), so the read is
				// served, from exactly the range the answer declared;
				// the excess fails the request afterwards, which is
				// logged and not retried (backend's retry knows the
				// whole range arrived).
				if err != nil {
					t.Fatalf("read with %s on every request: %v, want the file", f, err)
				}
				if sum := md5.Sum(b); hex.EncodeToString(sum[:]) != img.md5s["big.bin"] {
					t.Fatalf("read with %s: wrong bytes served (md5 %x)", f, sum)
				}
				return
			}
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read with %s on every request: %v, want EIO", f, err)
			}
			// 2 attempts of at most 1 s, 0.5 s apart, per backend read.
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("failing read took %v", d)
			}
		})
	}
	if err := readAllFiles(); err != nil {
		t.Fatalf("after the backend recovered: %v", err)
	}
	fi.Inject(testsvc.FaultUnauthorized) // an expired token
	if err := exec.Command("sh", "-c", "echo 3 > /proc/sys/vm/drop_caches").Run(); err != nil {
		t.Log("drop_caches:", err)
	}
	if err := readAllFiles(); err != nil {
		t.Fatalf("after a 401: %v", err)
	}
}
