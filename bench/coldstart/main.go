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
//   - nydus-prefetch-list: as nydus-cold, the mount request carrying
//     prefetch_files: the files the program read in a first (untimed)
//     nydus-cold run, recorded through /api/v1/metrics/pattern
//     (access_pattern on) and mapped to paths with the bootstrap;
//   - nydus-prefetch-all: as nydus-cold with fs_prefetch prefetch_all on
//     (the whole image fetched in the background);
//   - nydus-warm: as nydus-cold with the blob cache of a previous run.
//
// Runs are alternated (run 1 of every cell, then run 2, ...); the table
// gives medians. Needs root (QEMU, the guest), docker-registry and nginx.
// Images are built, pushed and converted once and kept in a registry
// under guest-tests/.cache/coldstart-registry (by their inputs' key);
// -out merges this run's images into coldstart-<rate>.data and redraws
// the table and chart from every image recorded there.
//
//	sudo go run ./bench/coldstart -prepare -images hello,py,jre,ml
//	sudo go run ./bench/coldstart -daemon bin/nydus-virtiofsd -runs 3 -images ml -out docs
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
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

var modes = []string{"oci", "nydus-cold", "nydus-prefetch-list", "nydus-prefetch-all", "nydus-warm"}

// imageOrder is the order of images in tables and charts.
var imageOrder = []string{"hello", "py", "jre", "ml", "ds"}

// cell is one measurement.
type cell struct {
	image, mode string
	size        int64         // the image's Nydus blobs
	pre         time.Duration // before QEMU starts: OCI pull + unpack
	guest       time.Duration // QEMU start to the first line
	fetched     int64
}

func (c cell) total() time.Duration { return c.pre + c.guest }

func main() {
	daemon := flag.String("daemon", "bin/nydus-virtiofsd", "nydus-virtiofsd binary")
	runs := flag.Int("runs", 3, "runs per cell")
	images := flag.String("images", "hello,py,jre,ml", "images (tags of guest-tests' Kata images)")
	out := flag.String("out", "", "directory for coldstart-<rate>.md and coldstart-<rate>.png (empty: print only)")
	rate := flag.String("rate", "100m", "nginx limit_rate between the daemon and the registry, bytes/s (\"\": unlimited)")
	prepare := flag.Bool("prepare", false, "only build, push and convert the images (kept in guest-tests/.cache/coldstart-registry)")
	redraw := flag.Bool("redraw", false, "only redraw coldstart-<rate>.md and .png from coldstart-<rate>.data in -out")
	flag.Parse()
	if err := run(*daemon, *runs, strings.Split(*images, ","), *out, *rate, *prepare, *redraw); err != nil {
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
	warm     map[string]string   // image -> blob cache dir of a finished run
	lists    map[string][]string // image -> prefetch list recorded by a first run
	logRoot  string
}

func run(daemon string, runs int, images []string, out, rate string, prepare, redraw bool) error {
	ctx := context.Background()
	log := logrus.StandardLogger()
	if redraw {
		if out == "" {
			return errors.New("-redraw needs -out")
		}
		cells, err := readCells(filepath.Join(out, "coldstart-"+label(rate)+".data"))
		if err != nil {
			return err
		}
		return writeOut(out, label(rate), cells, runs)
	}
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
	// The registry's storage is kept between runs: images already pushed
	// and converted under their inputs' key are not built again.
	regDir := filepath.Join(cache, "coldstart-registry")
	if err := os.MkdirAll(regDir, 0o755); err != nil {
		return err
	}
	reg, err := guesttests.StartLocalRegistry(ctx, regDir)
	if err != nil {
		return err
	}
	defer reg.Stop()
	imgs, err := guesttests.ReuseKataImages(ctx, reg.Host, repo, authn.Anonymous, work, images...)
	if err != nil {
		return err
	}
	if prepare {
		for _, im := range images {
			fmt.Printf("%s: %s/%s:%s and :%s-nydus ready\n", im, reg.Host, repo, imgs[im].Tag, imgs[im].Tag)
		}
		return nil
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
		lists: map[string][]string{}, logRoot: filepath.Join(cache, "coldstart-logs")}
	_ = os.RemoveAll(b.logRoot)
	for _, im := range images {
		c, err := b.measure(ctx, im, "record", 0)
		if err != nil {
			return fmt.Errorf("%s: recording the prefetch list: %w", im, err)
		}
		fmt.Printf("%s: prefetch list of %d files recorded (first run fetched %.2f MiB)\n", im, len(b.lists[im]), float64(c.fetched)/(1<<20))
	}
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
	if out == "" {
		fmt.Print(report(cells, images, runs) + fmt.Sprintf("Registry link: %s (nginx limit_rate per answer).\n", label(rate)))
		return nil
	}
	// merge with the images recorded earlier at this rate
	dataPath := filepath.Join(out, "coldstart-"+label(rate)+".data")
	old, err := readCells(dataPath)
	if err != nil {
		return err
	}
	this := map[string]bool{}
	for _, im := range images {
		this[im] = true
	}
	all := cells
	for _, c := range old {
		if !this[c.image] {
			all = append(all, c)
		}
	}
	return writeOut(out, label(rate), all, runs)
}

// label names a rate in file names and titles.
func label(rate string) string {
	if rate == "" {
		return "unlimited"
	}
	return rate
}

// writeOut writes the cells to coldstart-<label>.data and their table
// and chart to .md and .png.
func writeOut(out, label string, all []cell, runs int) error {
	var shown []string
	for _, im := range imageOrder {
		for _, c := range all {
			if c.image == im {
				shown = append(shown, im)
				break
			}
		}
	}
	table := report(all, shown, runs) + fmt.Sprintf("Registry link: %s (nginx limit_rate per answer).\n", label)
	fmt.Print(table)
	var data strings.Builder
	for _, c := range all {
		fmt.Fprintf(&data, "%s %s %d %d %d %d\n", c.image, c.mode, c.pre.Nanoseconds(), c.guest.Nanoseconds(), c.fetched, c.size)
	}
	if err := os.WriteFile(filepath.Join(out, "coldstart-"+label+".data"), []byte(data.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "coldstart-"+label+".md"), []byte(table), 0o644); err != nil {
		return err
	}
	return chart(all, shown, label, filepath.Join(out, "coldstart-"+label+".png"))
}

// readCells reads a .data file the bench wrote (none: no cells).
func readCells(path string) ([]cell, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []cell
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var c cell
		var pre, guest int64
		if n, _ := fmt.Sscan(l, &c.image, &c.mode, &pre, &guest, &c.fetched, &c.size); n < 5 {
			return nil, fmt.Errorf("%s: bad line %q", path, l)
		}
		c.pre, c.guest = time.Duration(pre), time.Duration(guest)
		out = append(out, c)
	}
	return out, nil
}

// measure boots one guest for image im in mode m.
func (b *bench) measure(ctx context.Context, im, m string, r int) (c cell, err error) {
	c = cell{image: im, mode: m}
	for _, n := range b.imgs[im].Blobs {
		c.size += n
	}
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
		if err := pullUnpack(ctx, counter.Host+"/"+repo+":"+b.imgs[im].Tag, rootfs); err != nil {
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
		mount := guesttests.RafsMount{CID: "c", Bootstrap: b.imgs[im].Bootstrap}
		co := guesttests.ConfigOptions{}
		switch m {
		case "record":
			co.AccessPattern = true
		case "nydus-prefetch-list":
			if len(b.lists[im]) == 0 {
				return c, fmt.Errorf("no prefetch list recorded")
			}
			co.Prefetch, mount.PrefetchFiles = true, b.lists[im]
		case "nydus-prefetch-all":
			co.Prefetch, co.PrefetchAll = true, true
		}
		mount.Config = guesttests.SnapshotterConfigWith(counter.Host, repo, "", "1", blobCache, co)
		var apiSock string
		opts.Backend = guesttests.Backend{Name: "nydus-virtiofsd-kata", Command: func(bc guesttests.BackendConfig) (*exec.Cmd, error) {
			apiSock = filepath.Join(filepath.Dir(bc.Socket), "nydusd-api.sock")
			return exec.Command(b.daemon, "virtiofs", "--log-level", "info", "--apisock", apiSock, "--sock", bc.Socket), nil
		}}
		opts.BeforeGuest = func(ctx context.Context) error {
			return guesttests.NewKataAPI(apiSock).StartSandbox(ctx, shared, []guesttests.RafsMount{mount}, false)
		}
		if m == "record" {
			// once the program has run, the guest says so and waits
			// while the access pattern is read
			var rec recorder
			rec.fn = func() {
				p, err := guesttests.NewKataAPI(apiSock).Pattern(ctx, "/rafs/c/lowerdir")
				if err == nil {
					b.lists[im], err = guesttests.PrefetchList(mount.Bootstrap, p)
				}
				rec.err = err
			}
			opts.Console = &rec
			defer func() {
				if rec.err != nil && err == nil {
					err = rec.err
				} else if !rec.done && err == nil {
					err = errors.New("the guest never said RECORD-DONE")
				}
			}()
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
		"umount $R/proc; umount $R/dev\n" + map[bool]string{true: "", false: "umount $R\n"}[m == "oci"] +
		map[bool]string{true: "echo RECORD-DONE; sleep 3\n"}[m == "record"]
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

// recorder watches the guest's console for RECORD-DONE and then calls
// fn once.
type recorder struct {
	fn   func()
	line []byte
	done bool
	err  error
}

func (r *recorder) Write(p []byte) (int, error) {
	r.line = append(r.line, p...)
	if !r.done && bytes.Contains(r.line, []byte("RECORD-DONE")) {
		r.done = true
		r.fn()
	}
	if i := bytes.LastIndexByte(r.line, '\n'); i >= 0 {
		r.line = r.line[i+1:]
	}
	return len(p), nil
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

func report(cells []cell, images []string, runs int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "| image (Nydus blobs) | mode | median start to first line | of which pull+unpack | ratio to OCI | fetched from the registry |\n")
	fmt.Fprintf(&sb, "| --- | --- | ---: | ---: | ---: | ---: |\n")
	for _, im := range images {
		var size int64
		for _, c := range cells {
			if c.image == im && c.size > 0 {
				size = c.size
			}
		}
		oci, _, _ := medians(cells, im, "oci")
		for _, m := range modes {
			t, p, f := medians(cells, im, m)
			if t == 0 {
				continue
			}
			fmt.Fprintf(&sb, "| %s (%s) | %s | %.2f s | %.2f s | %.2f | %s |\n", im, mib(size), m,
				t.Seconds(), p.Seconds(), t.Seconds()/oci.Seconds(), mib(f))
		}
	}
	fmt.Fprintf(&sb, "\n%d runs per cell, alternated; medians.\n", runs)
	return sb.String()
}

func mib(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
