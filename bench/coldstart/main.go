// Command coldstart measures container cold start the way Kata runs it:
// the time from the runtime starting the image's pull (OCI) or mount
// (Nydus) to the container's program printing its first line in a QEMU
// guest, and the bytes fetched from the registry, for each image and
// mode:
//
//   - oci: pull the whole image (every layer) from the registry, unpack it
//     to a host directory, share that with the daemon in virtiofsd mode;
//   - nydus-cold: the daemon in nydusd mode, the image mounted from its
//     bootstrap, chunks fetched on the guest's reads, empty blob cache,
//     no prefetch;
//   - nydus-cold-prefetch: as nydus-cold with fs_prefetch prefetch_all on
//     (what nydus-snapshotter configures);
//   - nydus-warm: as nydus-cold with the blob cache of a previous run.
//
// Runs are alternated (run 1 of every cell, then run 2, ...); the table
// gives medians. Needs root (QEMU, the guest) and docker-registry.
//
//	sudo go run ./bench/coldstart -daemon bin/nydus-virtiofsd -runs 3 -out docs
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"

	guesttests "github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

const repo = "bench/coldstart"

var modes = []string{"oci", "nydus-cold", "nydus-cold-prefetch", "nydus-warm"}

// cell is one measurement.
type cell struct {
	image, mode string
	pre         time.Duration // before QEMU starts: OCI pull + unpack
	guest       time.Duration // QEMU start to the first line
	fetched     int64
}

func (c cell) total() time.Duration { return c.pre + c.guest }

func main() {
	daemon := flag.String("daemon", "bin/nydus-virtiofsd", "nydus-virtiofsd binary")
	runs := flag.Int("runs", 3, "runs per cell")
	images := flag.String("images", "hello,py,jre", "images (tags of guest-tests' Kata images)")
	out := flag.String("out", "", "directory for coldstart-<rate>.md and coldstart-<rate>.png (empty: print only)")
	rate := flag.String("rate", "100m", "nginx limit_rate between the daemon and the registry, bytes/s (\"\": unlimited)")
	flag.Parse()
	if err := run(*daemon, *runs, strings.Split(*images, ","), *out, *rate); err != nil {
		logrus.Errorf("coldstart: %v", err)
		os.Exit(1)
	}
}

type bench struct {
	g        *guesttests.Guest
	daemon   string
	reg      *guesttests.LocalRegistry
	upstream string // the registry, or nginx in front of it
	imgs     map[string]*guesttests.NydusImage
	work     string
	warm     map[string]string // image -> blob cache dir of a finished run
	logRoot  string
}

func run(daemon string, runs int, images []string, out, rate string) error {
	ctx := context.Background()
	log := logrus.StandardLogger()
	daemon, _ = filepath.Abs(daemon)
	if err := guesttests.EnsureHost(ctx, log); err != nil {
		return err
	}
	root, err := guesttests.ModuleRoot()
	if err != nil {
		return err
	}
	cache := filepath.Join(root, "guest-tests", ".cache")
	g, err := guesttests.BuildGuest(ctx, guesttests.BuildOptions{ModuleRoot: root, CacheDir: cache, Log: log,
		Busybox: true, ExtraModules: []string{"overlay"}})
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "nvfs-coldstart.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	reg, err := guesttests.StartLocalRegistry(ctx, work)
	if err != nil {
		return err
	}
	defer reg.Stop()
	imgs, err := guesttests.BuildKataImages(ctx, reg.Host, repo, authn.Anonymous, work, images...)
	if err != nil {
		return err
	}
	upstream := reg.Host
	if rate != "" {
		l, err := startLimiter(ctx, filepath.Join(work, "nginx"), reg.Host, rate)
		if err != nil {
			return err
		}
		defer l.Stop()
		upstream = l.Host
	}
	b := &bench{upstream: upstream, g: g, daemon: daemon, reg: reg, imgs: imgs, work: work, warm: map[string]string{},
		logRoot: filepath.Join(cache, "coldstart-logs")}
	_ = os.RemoveAll(b.logRoot)
	var cells []cell
	for r := 0; r < runs; r++ {
		for _, im := range images {
			for _, m := range modes {
				c, err := b.measure(ctx, im, m, r)
				if err != nil {
					return fmt.Errorf("%s %s run %d: %w", im, m, r+1, err)
				}
				fmt.Printf("run %d %-6s %-20s pre %6.2fs guest %6.2fs total %6.2fs fetched %8.2f MiB\n", r+1, im, m,
					c.pre.Seconds(), c.guest.Seconds(), c.total().Seconds(), float64(c.fetched)/(1<<20))
				cells = append(cells, c)
			}
		}
	}
	label := "unlimited"
	if rate != "" {
		label = rate
	}
	table := report(cells, images, imgs, runs) + fmt.Sprintf("Registry link: %s (nginx limit_rate per answer).\n", label)
	fmt.Print(table)
	if out != "" {
		var data strings.Builder
		for _, c := range cells {
			fmt.Fprintf(&data, "%s %s %d %d %d\n", c.image, c.mode, c.pre.Nanoseconds(), c.guest.Nanoseconds(), c.fetched)
		}
		if err := os.WriteFile(filepath.Join(out, "coldstart-"+label+".data"), []byte(data.String()), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, "coldstart-"+label+".md"), []byte(table), 0o644); err != nil {
			return err
		}
		return chart(cells, images, label, filepath.Join(out, "coldstart-"+label+".png"))
	}
	return nil
}

// measure boots one guest for image im in mode m.
func (b *bench) measure(ctx context.Context, im, m string, r int) (cell, error) {
	c := cell{image: im, mode: m}
	prog := guesttests.KataImageCmd(im)
	if len(prog) == 0 {
		return c, fmt.Errorf("no image %q", im)
	}
	counter, err := guesttests.StartBlobCounter(b.upstream)
	if err != nil {
		return c, err
	}
	defer counter.Close()
	dir, err := os.MkdirTemp(b.work, "run.")
	if err != nil {
		return c, err
	}
	defer os.RemoveAll(dir)
	logDir := filepath.Join(b.logRoot, fmt.Sprintf("%s-%s-%d", im, m, r+1))
	opts := guesttests.RunOptions{Guest: b.g, LogDir: logDir, Timeout: 5 * time.Minute}
	var script string
	if m == "oci" {
		t0 := time.Now()
		rootfs := filepath.Join(dir, "rootfs")
		if err := pullUnpack(ctx, counter.Host+"/"+repo+":"+im, rootfs); err != nil {
			return c, err
		}
		c.pre = time.Since(t0)
		opts.Backend = guesttests.Template("nydus-virtiofsd", []string{b.daemon, "--socket-path={socket}", "--shared-dir={share}", "--cache=auto"})
		opts.Serve = guesttests.BackendConfig{SharedDir: rootfs}
		opts.Config = check.Config{Tag: "kataShared", Mount: "/run/kata-containers/shared/containers/c/rootfs"}
		script = "R=/run/kata-containers/shared/containers/c/rootfs\n"
	} else {
		shared := filepath.Join(dir, "shared")
		for _, d := range []string{"c/snapshotdir/fs", "c/snapshotdir/work", "c/rootfs"} {
			if err := os.MkdirAll(filepath.Join(shared, d), 0o755); err != nil {
				return c, err
			}
		}
		blobCache := filepath.Join(dir, "cache")
		if m == "nydus-warm" {
			if b.warm[im] == "" {
				return c, fmt.Errorf("no cache of an earlier run")
			}
			blobCache = b.warm[im]
		} else if err := os.MkdirAll(blobCache, 0o755); err != nil {
			return c, err
		}
		cfg := guesttests.SnapshotterConfig(counter.Host, repo, "", "1", blobCache, m == "nydus-cold-prefetch")
		var apiSock string
		opts.Backend = guesttests.Backend{Name: "nydus-virtiofsd-kata", Command: func(bc guesttests.BackendConfig) (*exec.Cmd, error) {
			apiSock = filepath.Join(filepath.Dir(bc.Socket), "nydusd-api.sock")
			return exec.Command(b.daemon, "virtiofs", "--log-level", "info", "--apisock", apiSock, "--sock", bc.Socket), nil
		}}
		boot := b.imgs[im].Bootstrap
		opts.BeforeGuest = func(ctx context.Context) error {
			return guesttests.NewKataAPI(apiSock).StartSandbox(ctx, shared,
				[]guesttests.RafsMount{{CID: "c", Bootstrap: boot, Config: cfg}}, false)
		}
		opts.Config = check.Config{Tag: "kataShared", Mount: "/run/kata-containers/shared"}
		script = "S=/run/kata-containers/shared; C=$S/containers/c; R=$C/rootfs\n" +
			"mount -t overlay overlay -o lowerdir=$S/rafs/c/lowerdir,upperdir=$C/snapshotdir/fs,workdir=$C/snapshotdir/work,index=off $R || exit 1\n"
		if m == "nydus-cold" {
			defer func() {
				// keep this run's cache for the warm runs
				if c.guest > 0 {
					keep := filepath.Join(b.work, "warm-"+im)
					_ = os.RemoveAll(keep)
					if os.Rename(blobCache, keep) == nil {
						b.warm[im] = keep
					}
				}
			}()
		}
	}
	script = "set -u -o pipefail\n/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin\n/bin/busybox --install -s\n" + script +
		"mkdir -p $R/dev $R/proc && mount --bind /dev $R/dev && mount -t proc proc $R/proc\n" +
		"chroot $R " + strings.Join(prog, " ") + " 2>&1 | sed 's/^/FIRST-LINE /' || { echo PROGRAM-FAILED; exit 1; }\n" +
		"umount $R/proc; umount $R/dev\n" + map[bool]string{true: "", false: "umount $R\n"}[m == "oci"]
	opts.Config.Steps = []check.Step{{Name: "container", Kind: check.KindExec, Argv: []string{"/bin/busybox", "sh", "-c", script}}}
	res, err := guesttests.Run(ctx, opts)
	if err != nil {
		return c, err
	}
	if res.GuestRC != 0 {
		return c, fmt.Errorf("guest rc %d; logs in %s", res.GuestRC, logDir)
	}
	first, ok := guesttests.FirstLine(filepath.Join(logDir, "serial.log"), "FIRST-LINE ")
	if !ok {
		return c, fmt.Errorf("no first line; logs in %s", logDir)
	}
	c.guest = first
	for _, n := range counter.Bytes() {
		c.fetched += n
	}
	return c, nil
}

// pullUnpack pulls every layer of ref and unpacks the flattened image
// into dir, what a snapshotter does for an OCI image.
func pullUnpack(ctx context.Context, ref, dir string) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	cmd := exec.CommandContext(ctx, "tar", "-x", "--numeric-owner", "-C", dir)
	cmd.Stdin = rc
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("unpack: %w: %s", err, out)
	}
	_, err = io.Copy(io.Discard, rc)
	return err
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func medians(cells []cell, im, m string) (total, pre time.Duration, fetched int64) {
	var ts, ps []time.Duration
	var fs []int64
	for _, c := range cells {
		if c.image == im && c.mode == m {
			ts, ps, fs = append(ts, c.total()), append(ps, c.pre), append(fs, c.fetched)
		}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i] < fs[j] })
	if len(fs) > 0 {
		fetched = fs[len(fs)/2]
	}
	return median(ts), median(ps), fetched
}

func report(cells []cell, images []string, imgs map[string]*guesttests.NydusImage, runs int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "| image (Nydus blobs) | mode | median start to first line | of which pull+unpack | ratio to OCI | fetched from the registry |\n")
	fmt.Fprintf(&sb, "| --- | --- | ---: | ---: | ---: | ---: |\n")
	for _, im := range images {
		var size int64
		for _, n := range imgs[im].Blobs {
			size += n
		}
		oci, _, _ := medians(cells, im, "oci")
		for _, m := range modes {
			t, p, f := medians(cells, im, m)
			fmt.Fprintf(&sb, "| %s (%.1f MiB) | %s | %.2f s | %.2f s | %.2f | %.2f MiB |\n", im, float64(size)/(1<<20), m,
				t.Seconds(), p.Seconds(), t.Seconds()/oci.Seconds(), float64(f)/(1<<20))
		}
	}
	fmt.Fprintf(&sb, "\n%d runs per cell, alternated; medians.\n", runs)
	return sb.String()
}
