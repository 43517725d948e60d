package guesttests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// TestGuestRAFSRegistryColdCache (issue 9): a guest reads, through
// virtiofs, an image whose blob is in a real docker-registry, with an
// empty blob cache: every chunk is fetched on the guest's first read,
// checked against the manifest, and lands in the cache directory.
func TestGuestRAFSRegistryColdCache(t *testing.T) {
	env := setupGuests(t)
	daemon := rafsDaemon(t)
	src := filepath.Join(t.TempDir(), "tree")
	if err := makeRAFSTree(src); err != nil {
		t.Fatal(err)
	}
	want, _, err := check.Build(src, check.ManifestOptions{Hash: true, Xattrs: true})
	if err != nil {
		t.Fatal(err)
	}
	img := builtImage(t, src, want, builder.Options{Compressor: builder.CompressZstd, ChunkSize: 64 << 10})
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
	ri, err := rafs.Open(img.bootstrap, rafs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := ri.BlobIDs()
	ri.Close()
	for _, id := range ids {
		data, err := os.ReadFile(filepath.Join(img.blobDir, id))
		if err != nil {
			t.Fatal(err)
		}
		reg.SeedBlob(t, id, data)
	}
	cacheDir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "nydusd.json")
	config := fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"scheme":"http","host":%q,"repo":%q,"auth":%q}},`+
		`"cache":{"type":"blobcache","config":{"work_dir":%q}}},"mode":"direct","digest_validate":true,`+
		`"fs_prefetch":{"enable":false}}`, reg.Host, reg.Repo, reg.AuthB64(), cacheDir)
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	backend := Template("go-rafs-registry", []string{daemon, "virtiofs", "--sock", "{socket}", "--bootstrap", "{bootstrap}", "--config", "{config}"})
	serve := BackendConfig{Vars: map[string]string{"bootstrap": img.bootstrap, "config": cfg}}
	steps := img.steps()
	res, err := Run(context.Background(), RunOptions{
		Guest: env.guest, Backend: backend, Serve: serve,
		Config: check.Config{Steps: steps},
		LogDir: logDir(t), Timeout: 180 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	logRun(t, res)
	if err := Verify(res, steps); err != nil {
		t.Errorf("%v\n%s", err, res.Tails(20))
	}
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(cacheDir, id+".blob.data.chunk_map")); err != nil {
			t.Errorf("blob %s: no chunk map in the cache directory after the guest read it: %v", id, err)
		}
	}
}
