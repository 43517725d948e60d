package api

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// TestGuestKataSequence is a Kata sandbox in process: the daemon starts
// with an empty pseudo root served over vhost-user, Kata's calls mount the
// shared directory and a container image through the API, and the
// "guest" (testdriver, QEMU's message order) reads from both, then the
// image goes away under it.
func TestGuestKataSequence(t *testing.T) {
	d := startDaemon(t)
	dir, err := os.MkdirTemp("", "api-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "vhost-fs.sock")
	l, err := vhostuser.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	dev := fusewire.NewDevice(d.v, fusewire.Options{Logger: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- vhostuser.Serve(ctx, l, dev, vhostuser.Options{RequestQueues: 1, Logger: quiet()}) }()

	// Kata: the daemon is RUNNING before the VMM starts; mount the share.
	if info := d.info(t); info.State != "RUNNING" {
		t.Fatalf("state %q", info.State)
	}
	shared := t.TempDir()
	if err := os.WriteFile(filepath.Join(shared, "hostname"), []byte("sandbox\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := d.do(t, "POST", "/api/v1/mount?mountpoint=/containers", mountBody("passthrough_fs", shared, "")); r.status != http.StatusNoContent {
		t.Fatalf("%d %s", r.status, r.body)
	}

	drv, err := testdriver.Connect(sock, testdriver.Options{Sequence: testdriver.QEMU, QueueSize: 256, MemRegions: []uint64{32 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	send := func(q int) fuseclient.SendFunc {
		return func(readable [][]byte, sizes []int) ([]byte, error) {
			return drv.Submit(q, readable, sizes, testdriver.Layout{})
		}
	}
	c := fuseclient.New(send(1))
	c.Hiprio = send(0)
	if _, err := c.Init(38, 0xb7bfffffb, 128<<10); err != nil {
		t.Fatal(err)
	}
	// The container's image arrives while the guest runs.
	const lower = "/rafs/0123abcd/lowerdir"
	if r := d.do(t, "POST", "/api/v1/mount?mountpoint="+runtimeRsEscape(lower), mountBody("rafs", bootstrap, localfsConfig(t))); r.status != http.StatusNoContent {
		t.Fatalf("%d %s", r.status, r.body)
	}
	fh, err := c.OpenDir(fuse.FUSE_ROOT_ID)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := c.ReadDirPlus(fuse.FUSE_ROOT_ID, fh.Fh, 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	sort.Strings(names)
	if strings.Join(names, " ") != ". .. containers rafs" {
		t.Fatalf("root lists %v", names)
	}
	read := func(p string) ([]byte, error) {
		e := &fuse.EntryOut{NodeId: fuse.FUSE_ROOT_ID}
		for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
			if e, err = c.Lookup(e.NodeId, part); err != nil {
				return nil, err
			}
		}
		o, err := c.Open(e.NodeId, syscall.O_RDONLY)
		if err != nil {
			return nil, err
		}
		defer c.Release(e.NodeId, o.Fh)
		return c.Read(e.NodeId, o.Fh, 0, uint32(e.Size))
	}
	if b, err := read("/containers/hostname"); err != nil || string(b) != "sandbox\n" {
		t.Fatalf("share: %q, %v", b, err)
	}
	b, err := read(lower + "/hardlink-test/foo")
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(b)
	if got := hex.EncodeToString(sum[:]); got != "a292e7c6b19c3566a7bbee6a7da632ab" {
		t.Fatalf("image file md5 %s", got)
	}
	// Container removal: the image goes, the share stays.
	if r := d.do(t, "DELETE", "/api/v1/mount?mountpoint="+lower, ""); r.status != http.StatusNoContent {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if _, err := read(lower + "/hardlink-test/foo"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("read after DELETE: %v, want ENOENT", err)
	}
	if b, err := read("/containers/hostname"); err != nil || string(b) != "sandbox\n" {
		t.Fatalf("share after DELETE: %q, %v", b, err)
	}
	// BATCH_FORGET on hiprio, one entry per mount (the image's is stale):
	// the share drops the file it was holding (three lookups: two reads
	// and this one).
	croot, err := c.Lookup(fuse.FUSE_ROOT_ID, "containers")
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.Lookup(croot.NodeId, "hostname")
	if err != nil {
		t.Fatal(err)
	}
	fs, err := d.v.FS("/containers")
	if err != nil {
		t.Fatal(err)
	}
	pt := fs.(*passthrough.FS)
	if n, _ := pt.Inodes(); n != 2 {
		t.Fatalf("share holds %d inodes before FORGET, want 2", n)
	}
	if err := c.BatchForget([][2]uint64{{e.NodeId, 3}, {1<<56 | 5, 1}, {2<<56 | 5, 1}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n, _ := pt.Inodes(); n != 1; n, _ = pt.Inodes() {
		if time.Now().After(deadline) {
			t.Fatalf("share holds %d inodes after FORGET, want 1", n)
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Destroy(); err != nil {
		t.Fatal(err)
	}
	drv.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the frontend went")
	}
}
