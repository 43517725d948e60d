package guesttests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// TestGuestRemoteRegistry serves RAFS images whose blobs sit only in a
// real registry (docker-registry with token auth, blobs read lazily by
// ranged GETs) to a QEMU guest, which checks every byte against the
// manifest: the v6-2.2 fixture and a zstd image built from the special
// tree, with nydusd's command line and a nydusd config naming the
// registry. No secret may show in the daemon's debug log.
func TestGuestRemoteRegistry(t *testing.T) {
	env := setupGuests(t)
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	daemon := rafsDaemon(t)
	backend := Template("go-rafs-registry", []string{daemon, "virtiofs", "--log-level", "debug", "--sock", "{socket}",
		"--bootstrap", "{bootstrap}", "--config", "{config}"})

	src := filepath.Join(t.TempDir(), "tree")
	if err := makeRAFSTree(src); err != nil {
		t.Fatal(err)
	}
	want, _, err := check.Build(src, check.ManifestOptions{Hash: true, Xattrs: true})
	if err != nil {
		t.Fatal(err)
	}
	images := []struct {
		name string
		img  rafsImage
	}{
		{"fixture-v6-2.2", v6Fixture(root)},
		{"built-v6-zstd", builtImage(t, src, want, builder.Options{Compressor: builder.CompressZstd})},
	}
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthToken})
	for _, im := range images {
		t.Run(im.name, func(t *testing.T) {
			ents, err := os.ReadDir(im.img.blobDir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if len(e.Name()) != 64 {
					continue
				}
				b, err := os.ReadFile(filepath.Join(im.img.blobDir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) == e.Name() {
					reg.PushBlob(t, b)
				} else {
					reg.SeedBlob(t, e.Name(), b) // the fixture's id is not its sha256
				}
			}
			// The bootstrap alone, away from its blobs: every byte comes from
			// the registry.
			boot := filepath.Join(t.TempDir(), "image.boot")
			data, err := os.ReadFile(im.img.bootstrap)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(boot, data, 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(t.TempDir(), "nydusd.json")
			if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"scheme":"http","host":%q,"repo":%q,"auth":%q,"timeout":5,"connect_timeout":5,"retry_limit":2}},"cache":{"type":""}},"mode":"direct","digest_validate":true,"enable_xattr":true}`,
				reg.Host, reg.Repo, reg.AuthB64())), 0o600); err != nil {
				t.Fatal(err)
			}
			steps := []check.Step{{Name: "manifest", Kind: check.KindManifest, Manifest: im.img.want,
				Build: check.ManifestOptions{Hash: true, Xattrs: im.img.compare.Xattrs}, Compare: im.img.compare}}
			logs := logDir(t)
			res, err := Run(context.Background(), RunOptions{
				Guest: env.guest, Backend: backend,
				Serve:  BackendConfig{Vars: map[string]string{"bootstrap": boot, "config": cfg}},
				Config: check.Config{Steps: steps},
				LogDir: logs, Timeout: 180 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			logRun(t, res)
			if err := Verify(res, steps); err != nil {
				t.Errorf("%v\n%s", err, res.Tails(20))
			}
			blog, err := os.ReadFile(filepath.Join(logs, "backend.log"))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{reg.Pass, reg.AuthB64(), "Bearer ", "Basic "} {
				if strings.Contains(string(blog), s) {
					t.Errorf("backend.log shows a secret (%.8s…)", s)
				}
			}
		})
	}
}
