package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/sirupsen/logrus"

	guesttests "github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

// lazyScript is the guest's part: the container rootfs as Kata's agent
// builds it (overlay on the image's lazily served lowerdir), then the
// image's program.
const lazyScript = `set -u
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
S=/run/kata-containers/shared; C=$S/containers/demo
mount -t overlay overlay -o lowerdir=$S/rafs/demo/lowerdir,upperdir=$C/snapshotdir/fs,workdir=$C/snapshotdir/work,index=off $C/rootfs || exit 1
mkdir -p $C/rootfs/dev && mount --bind /dev $C/rootfs/dev
chroot $C/rootfs /usr/bin/python3.11 /app/main.py; rc=$?
umount $C/rootfs/dev; umount $C/rootfs
exit $rc
`

// runLazy serves a Nydus image from a registry it starts on loopback,
// through the daemon in nydusd mode driven as Kata drives it, to a guest
// that runs the image's Python program; it prints the time from starting
// QEMU to the program's first line and the bytes of the image fetched.
func runLazy(ctx context.Context, daemon string, timeout time.Duration) int {
	log := logrus.StandardLogger()
	fail := func(err error) int { log.Errorf("demo: %v", err); return 1 }
	if err := guesttests.EnsureHost(ctx, log); err != nil {
		return fail(err)
	}
	root, err := guesttests.ModuleRoot()
	if err != nil {
		return fail(err)
	}
	cacheDir := filepath.Join(root, "guest-tests", ".cache")
	g, err := guesttests.BuildGuest(ctx, guesttests.BuildOptions{ModuleRoot: root, CacheDir: cacheDir, Log: log,
		Busybox: true, ExtraModules: []string{"overlay"}})
	if err != nil {
		return fail(fmt.Errorf("building the guest: %w", err))
	}
	work, err := os.MkdirTemp("", "nvfs-lazy.")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(work)
	reg, err := guesttests.StartLocalRegistry(ctx, work)
	if err != nil {
		return fail(err)
	}
	defer reg.Stop()
	fmt.Printf("demo: registry on %s; building a Python image from Debian packages, pushing it, converting it to Nydus\n", reg.Host)
	const repo = "demo/python"
	ims, err := guesttests.BuildKataImages(ctx, reg.Host, repo, authn.Anonymous, work, "py")
	if err != nil {
		return fail(err)
	}
	img := ims["py"]
	var total int64
	for _, n := range img.Blobs {
		total += n
	}
	counter, err := guesttests.StartBlobCounter(reg.Host)
	if err != nil {
		return fail(err)
	}
	defer counter.Close()

	shared := filepath.Join(work, "sandbox", "shared")
	blobCache := filepath.Join(work, "sandbox", "cache")
	for _, d := range []string{"demo/snapshotdir/fs", "demo/snapshotdir/work", "demo/rootfs"} {
		if err := os.MkdirAll(filepath.Join(shared, d), 0o755); err != nil {
			return fail(err)
		}
	}
	if err := os.MkdirAll(blobCache, 0o755); err != nil {
		return fail(err)
	}
	var apiSock string
	backend := guesttests.Backend{Name: "nydus-virtiofsd-kata", Command: func(c guesttests.BackendConfig) (*exec.Cmd, error) {
		apiSock = filepath.Join(filepath.Dir(c.Socket), "nydusd-api.sock")
		return exec.Command(daemon, "virtiofs", "--log-level", "info", "--apisock", apiSock, "--sock", c.Socket), nil
	}}
	before := func(ctx context.Context) error {
		cfg := guesttests.SnapshotterConfig(counter.Host, repo, "", "1", blobCache, false)
		return guesttests.NewKataAPI(apiSock).StartSandbox(ctx, shared,
			[]guesttests.RafsMount{{CID: "demo", Bootstrap: img.Bootstrap, Config: cfg}}, false)
	}
	logDir := filepath.Join(cacheDir, "demo-logs", "lazy")
	if err := os.RemoveAll(logDir); err != nil {
		return fail(err)
	}
	fmt.Printf("demo: Nydus image %s:py-nydus (%d blobs, %.1f MiB), booting a guest that runs its /app/main.py\n",
		repo, len(img.Blobs), float64(total)/(1<<20))
	res, err := guesttests.Run(ctx, guesttests.RunOptions{
		Guest: g, Backend: backend, BeforeGuest: before, LogDir: logDir, Timeout: timeout, Console: os.Stdout, Log: log,
		Config: check.Config{Tag: "kataShared", Mount: "/run/kata-containers/shared",
			Steps: []check.Step{{Name: "container", Kind: check.KindExec, Argv: []string{"/bin/busybox", "sh", "-c", lazyScript}}}},
	})
	if err != nil {
		return fail(err)
	}
	first, ok := guesttests.FirstLine(filepath.Join(logDir, "serial.log"), "PY-FIRST-LINE")
	var fetched int64
	for _, n := range counter.Bytes() {
		fetched += n
	}
	if !ok {
		log.Errorf("demo: the program printed no first line; logs in %s", logDir)
		return 1
	}
	fmt.Printf("demo: QEMU start to the container's first line: %.2fs; fetched %.2f MiB of the image's %.2f MiB (%.0f%%) from the registry\n",
		first.Seconds(), float64(fetched)/(1<<20), float64(total)/(1<<20), 100*float64(fetched)/float64(total))
	if res.GuestRC != 0 {
		return 1
	}
	return 0
}
