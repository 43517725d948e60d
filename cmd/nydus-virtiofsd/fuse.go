package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/hostmount"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

const fuseLong = `Mount a RAFS image read-only on the host through /dev/fuse, as nydusd fuse does;
stay in the foreground and unmount on SIGTERM or SIGINT. The blobs are looked up in
--blob-dir (or --blob, or the backend of --config); without any of these, beside the
bootstrap. Every blob must open before the image is mounted: a missing one fails the
mount with its id and where it was looked for. The --config's prefetch section
(rafs.prefetch, v1 fs_prefetch) starts a background prefetch into its blob cache, as
the daemon's mounts do: the bootstrap's prefetch table, then with prefetch_all every
chunk. --prefetch-files FILE (absolute image paths, one a line; a directory means its
subtree, "/" alone the whole image) replaces the table, with or without that section.
The log says "prefetch done" once every chunk asked for was fetched.

The mountpoint must be an existing directory. A mountpoint already holding a live
image of ours is refused; one left stale by a killed daemon ("transport endpoint is
not connected") is refused with the command that clears it, or cleared first with
--unmount-stale.`

// runFuse is `nydusd fuse`.
func runFuse(args []string) int {
	cmd := newCommand("fuse", "--bootstrap FILE [--blob-dir DIR | --blob FILE | --config FILE] --mountpoint DIR", fuseLong)
	var f imageFlags
	flags := cmd.Flags()
	f.register(flags)
	mountpoint := flags.StringP("mountpoint", "M", "", "where to mount the image: an existing directory (required)")
	unmountStale := flags.Bool("unmount-stale", false, "clear a stale FUSE mount left at the mountpoint by a killed daemon, then mount")
	debug := flags.Bool("debug", false, "log every FUSE request (at debug level)")
	logLevel := addLogLevel(flags)
	logFile := flags.StringP("log-file", "L", "", "append the log to this file instead of stderr")
	// nydusd fuse's options that mean nothing here, accepted with a warning.
	threads := flags.Int("thread-num", 0, "accepted for nydusd compatibility: requests are served concurrently anyway")
	flags.IntVar(threads, "fuse-threads", 0, "the same as --thread-num")
	apiSock := flags.StringP("apisock", "A", "", "serve nydusd's HTTP API (daemon info, metrics, events, GET /metrics) on this unix socket")
	var oc observeConfig
	flags.StringVar(&oc.MetricsAddr, "metrics-addr", "", "also serve Prometheus metrics on GET http://HOST:PORT/metrics")
	flags.StringVar(&oc.LogFormat, "log-format", "text", "log line format: text or json")
	flags.BoolVar(&oc.NoMeasureLatency, "no-measure-latency", false, "do not time requests (counts only)")
	var ignored []string
	prefetchFiles := flags.String("prefetch-files", "", "file listing image paths to prefetch at mount, one a line (\"/\" alone: the whole image), instead of the bootstrap's prefetch table; needs --config with a blob cache")
	for _, n := range []string{"id", "supervisor", "failover-policy"} {
		flags.String(n, "", "accepted for nydusd compatibility; ignored with a warning")
		ignored = append(ignored, n)
	}
	flags.Lookup("fuse-threads").Hidden = true
	return execute(cmd, args, func([]string) error {
		log, err := toolLogger(*logLevel, *logFile)
		if err != nil {
			return err
		}
		if err := setLogFormat(&daemonConfig{}, oc.LogFormat); err != nil {
			return usageError{err}
		}
		applyLogFormat(log, oc.LogFormat)
		if err := required(flags, "bootstrap", "mountpoint"); err != nil {
			return err
		}
		if *threads != 0 {
			log.Warnf("--thread-num %d: ignored; FUSE requests are served concurrently by as many goroutines as needed", *threads)
		}
		for _, n := range ignored {
			if flags.Changed(n) {
				log.Warnf("--%s: accepted for nydusd compatibility and ignored", n)
			}
		}
		var prefetch []string
		if *prefetchFiles != "" {
			if prefetch, err = readPrefetchFile(*prefetchFiles); err != nil {
				return err
			}
		}
		mnt, err := checkMountpoint(*mountpoint, *unmountStale, log)
		if err != nil {
			return err
		}
		defer f.closeCache() // after the image
		img, err := f.openVerified(log)
		if err != nil {
			return err
		}
		defer img.Close()
		var rc *backend.Config // its prefetch section, iostats_files and access_pattern
		if f.config != "" {
			rc, _ = backend.LoadConfig(f.config) // loaded once already by openVerified
		}
		// The config's prefetch, as the daemon's mounts start it: the
		// bootstrap's prefetch table (or --prefetch-files instead), then
		// prefetch_all; it stops when the image is closed.
		switch {
		case rc != nil:
			set := storage.SettingsFromConfig(rc)
			if !set.Prefetch && len(prefetch) == 0 {
				break
			}
			if _, err := img.StartPrefetch(rafs.PrefetchOptions{Files: prefetch, All: set.PrefetchAll}); err != nil {
				return err
			}
			log.Infof("prefetch started (%d paths from --prefetch-files, prefetch_all %v)", len(prefetch), set.PrefetchAll)
		case len(prefetch) > 0:
			log.Warnf("--prefetch-files: ignored: without --config the blobs are local files with no blob cache to fill")
		}
		// Signals are caught before the mount is live: one arriving in
		// between must unmount, not kill the process and leave the mount.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(sigs)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		obs := newObserver(oc, logrus.NewEntry(log))
		defer obs.close()
		obs.setCaches(nil)
		if *apiSock != "" {
			wait, err := serveFuseAPI(ctx, *apiSock, obs, logrus.NewEntry(log))
			if err != nil {
				return err
			}
			defer wait()
			defer cancel()
		}
		if err := obs.serve(ctx); err != nil {
			return err
		}
		srv, err := hostmount.Mount(obs.wrap(fuseMountID, rafs.NewFS(img, rafs.FSOptions{}), rc), mnt, hostmount.MountOptions(*debug))
		if err != nil {
			return err
		}
		log.Infof("serving RAFS v%d image %s at %s", img.Version(), f.bootstrap, mnt)
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case s := <-sigs:
			log.Infof("%s received: unmounting %s", unix.SignalName(s.(syscall.Signal)), mnt)
			if err := srv.Unmount(); err != nil {
				return fmt.Errorf("unmount %s: %w", mnt, err)
			}
			<-done
		case <-done:
			log.Infof("%s was unmounted, exiting", mnt)
		}
		return nil
	})
}

// fuseFSType is the filesystem type our FUSE mounts show in mountinfo.
const fuseFSType = "fuse.rafs"

// checkMountpoint returns the absolute mountpoint if an image can be
// mounted there: an existing directory without a live mount of ours on
// it. A stale FUSE mount (its daemon gone) is unmounted when unmountStale,
// else refused with the command that clears it.
func checkMountpoint(mnt string, unmountStale bool, log *logrus.Logger) (string, error) {
	abs, err := filepath.Abs(mnt)
	if err != nil {
		return "", fmt.Errorf("--mountpoint %s: %w", mnt, err)
	}
	fi, err := os.Stat(abs)
	if err == nil {
		if ours, merr := mountedHere(abs); merr != nil {
			return "", merr
		} else if ours {
			// The kernel may answer stat from its cache; statfs always
			// asks the daemon.
			var st unix.Statfs_t
			if serr := unix.Statfs(abs, &st); errors.Is(serr, unix.ENOTCONN) || errors.Is(serr, unix.ECONNABORTED) {
				err = syscall.ENOTCONN
			} else {
				return "", fmt.Errorf("--mountpoint %s: an image is already mounted here by another %s fuse; "+
					"unmount it first ('umount %s') or pick another mountpoint", abs, prog, abs)
			}
		}
	}
	if errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) {
		if !unmountStale {
			return "", fmt.Errorf("--mountpoint %s holds a stale FUSE mount (its daemon is gone): clear it with 'umount -l %s' "+
				"(or 'fusermount3 -u -z %s'), or pass --unmount-stale", abs, abs, abs)
		}
		if err := unmountDetached(abs); err != nil {
			return "", fmt.Errorf("--mountpoint %s: clearing the stale mount: %w", abs, err)
		}
		log.Infof("cleared the stale FUSE mount at %s", abs)
		fi, err = os.Stat(abs)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("--mountpoint %s: no such directory (create it first)", abs)
	case err != nil:
		return "", fmt.Errorf("--mountpoint %s: %w", abs, err)
	case !fi.IsDir():
		return "", fmt.Errorf("--mountpoint %s: not a directory", abs)
	}
	return abs, nil
}

// unmountDetached lazily unmounts a mount: directly when root, else with
// fusermount3 (or fusermount).
func unmountDetached(path string) error {
	if os.Geteuid() == 0 {
		return unix.Unmount(path, unix.MNT_DETACH)
	}
	for _, tool := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(tool); err == nil {
			out, err := exec.Command(p, "-u", "-z", path).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s: %v: %s", tool, err, strings.TrimSpace(string(out)))
			}
			return nil
		}
	}
	return errors.New("not root, and no fusermount3 or fusermount found")
}

// mountedHere reports whether the topmost mount at path is one of our
// FUSE mounts (/proc/self/mountinfo).
func mountedHere(path string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	ours := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fl := range fields {
			if fl == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		if unescapeMountinfo(fields[4]) == path {
			ours = fields[sep+1] == fuseFSType // later lines are mounted on top
		}
	}
	return ours, sc.Err()
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
