// Command demo shares a directory through a vhost-user-fs backend with a
// QEMU guest that lists it and prints a file, then shuts everything down.
// It installs QEMU when missing (as root) and builds the guest on first use
// (cached in guest-tests/.cache).
//
//	go run ./guest-tests/cmd/demo                      # our daemon, on a sample directory
//	go run ./guest-tests/cmd/demo -backend c           # Debian's C virtiofsd
//	go run ./guest-tests/cmd/demo -dir /some/dir -file README.md
//	go run ./guest-tests/cmd/demo -cmd '/path/daemon --socket-path={socket} --shared-dir={share}'
//	go run ./guest-tests/cmd/demo -backend c -shell   # then a busybox shell in the guest
//	go run ./guest-tests/cmd/demo -lazy bin/nydus-virtiofsd  # a Nydus image from a loopback registry, as Kata runs it
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	guesttests "github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

func main() {
	os.Exit(run())
}

func run() int {
	backend := flag.String("backend", "go", "backend from the table: c (Debian's C virtiofsd) or go (nydus-virtiofsd)")
	cmdTmpl := flag.String("cmd", "", "custom backend command ({socket}, {share}, {cache} are substituted); overrides -backend")
	name := flag.String("name", "custom", "what to call the -cmd backend in the output")
	dir := flag.String("dir", "", "directory to share (default: a sample directory)")
	file := flag.String("file", "hello.txt", "file (relative to the share) whose content the guest prints")
	cache := flag.String("cache", "auto", "cache mode")
	timeout := flag.Duration("timeout", 90*time.Second, "limit for the whole run")
	shell := flag.Bool("shell", false, "after the listing, an interactive busybox shell in the share (needs busybox-static)")
	lazy := flag.String("lazy", "", "nydus-virtiofsd binary: serve a Nydus image lazily from a loopback registry, as Kata does, to a guest that runs its program")
	flag.Parse()
	log := logrus.StandardLogger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *lazy != "" {
		return runLazy(ctx, *lazy, 3*(*timeout))
	}

	if err := guesttests.EnsureHost(ctx, log); err != nil {
		log.Errorf("demo: %v", err)
		return 2
	}
	root, err := guesttests.ModuleRoot()
	if err != nil {
		log.Errorf("demo: %v", err)
		return 2
	}
	cacheDir := filepath.Join(root, "guest-tests", ".cache")
	var b guesttests.Backend
	if *cmdTmpl != "" {
		b = guesttests.Template(*name, strings.Fields(*cmdTmpl))
	} else {
		for _, c := range guesttests.Backends(root, cacheDir) {
			if c.Name == *backend {
				b = c
			}
		}
		if b.Name == "" {
			log.Errorf("demo: unknown backend %q", *backend)
			return 2
		}
	}
	share := *dir
	if share == "" {
		tmp, err := os.MkdirTemp("", "nvfs-demo.")
		if err != nil {
			log.Errorf("demo: %v", err)
			return 2
		}
		defer os.RemoveAll(tmp)
		if err := sample(tmp); err != nil {
			log.Errorf("demo: %v", err)
			return 2
		}
		share = tmp
	}
	share, _ = filepath.Abs(share)
	g, err := guesttests.BuildGuest(ctx, guesttests.BuildOptions{ModuleRoot: root, CacheDir: cacheDir, Log: log, Busybox: *shell})
	if err != nil {
		log.Errorf("demo: building the guest: %v", err)
		return 2
	}
	what := "sharing " + share + " through"
	if *cmdTmpl != "" && !strings.Contains(*cmdTmpl, "{share}") {
		what = "serving what the command names through" // an image, say
	}
	fmt.Printf("demo: %s backend %q, booting %s\n", what, b.Name, filepath.Base(g.Kernel))
	steps := []check.Step{{Name: "demo", Kind: check.KindDemo, File: *file}}
	// One log directory per backend, replaced by each run, under the cache
	// rather than a new one in /tmp every time.
	logDir := filepath.Join(cacheDir, "demo-logs", strings.ReplaceAll(b.Name, "/", "-"))
	if err := os.RemoveAll(logDir); err != nil {
		log.Errorf("demo: %v", err)
		return 2
	}
	opts := guesttests.RunOptions{
		Guest:   g,
		Backend: b,
		LogDir:  logDir,
		Serve:   guesttests.BackendConfig{SharedDir: share, Cache: *cache},
		Timeout: *timeout,
		Console: os.Stdout,
		Log:     log,
	}
	if *shell {
		steps = append(steps, check.Step{Name: "shell", Kind: check.KindShell})
		opts.Stdin = os.Stdin
		opts.Config.StepTimeoutSec = 24 * 3600
		opts.Timeout = 24 * time.Hour
	}
	opts.Config.Steps = steps
	res, err := guesttests.Run(ctx, opts)
	if err != nil {
		log.Errorf("demo: %v", err)
		return 1
	}
	fmt.Printf("demo: guest rc=%d, boot to mounted %.2fs, total %.2fs, backend exit code %d; logs in %s\n",
		res.GuestRC, res.Events["MOUNTED"].Seconds(), res.Wall.Seconds(), res.BackendExit, res.LogDir)
	if res.GuestRC != 0 || res.BackendExit != 0 {
		return 1
	}
	return 0
}

// sample fills dir with a few files to look at.
func sample(dir string) error {
	files := map[string]string{
		"hello.txt":         "Hello from the host, read by the guest through virtio-fs.\n",
		"docs/README":       "nydus-virtiofsd demo share\n",
		"docs/ünïcødé.txt":  "unicode names work\n",
		"data/numbers.csv":  "1,2,3\n4,5,6\n",
		"data/empty":        "",
		"scripts/run.sh":    "#!/bin/sh\necho hi\n",
		"deep/a/b/c/d/leaf": "deep\n",
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			return err
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	return os.Symlink("hello.txt", filepath.Join(dir, "link-to-hello"))
}
