package guesttests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// EnvBackends names the environment variable listing the backends to run
// (comma-separated names, e.g. "c,go"). Unset: every available backend runs
// and the others skip with their probe's reason. Set: the listed backends
// must be available, or their tests fail.
const EnvBackends = "NVFS_BACKENDS"

// EnvDaemon names the environment variable holding a prebuilt
// nydus-virtiofsd binary; unset, the "go" backend builds ./cmd/nydus-virtiofsd.
const EnvDaemon = "NVFS_DAEMON"

// Backends is the table of backends the guest checks and benchmarks run
// against, the reference first. Adding a backend is one line here.
func Backends(moduleRoot, cacheDir string) []Backend {
	return []Backend{
		CVirtiofsd(),
		GoDaemon(DaemonBinary(moduleRoot, cacheDir)),
	}
}

// DaemonBinary returns a function giving the nydus-virtiofsd binary: $NVFS_DAEMON
// if set, else one built (once per returned function) from moduleRoot into cacheDir.
func DaemonBinary(moduleRoot, cacheDir string) func(ctx context.Context) (string, error) {
	var once sync.Once
	var path string
	var err error
	return func(ctx context.Context) (string, error) {
		once.Do(func() {
			if p := os.Getenv(EnvDaemon); p != "" {
				path = p
				return
			}
			path = filepath.Join(cacheDir, "nydus-virtiofsd")
			if e := os.MkdirAll(cacheDir, 0o755); e != nil {
				err = e
				return
			}
			unlock, e := lockCache(cacheDir)
			if e != nil {
				err = e
				return
			}
			defer unlock()
			if e := goBuild(ctx, moduleRoot, "./cmd/nydus-virtiofsd", path, false); e != nil {
				err = fmt.Errorf("cannot build nydus-virtiofsd: %w", e)
			}
		})
		return path, err
	}
}

// Selected is one backend chosen for a run.
type Selected struct {
	Backend     Backend
	Unavailable error // why it cannot serve (nil: it can)
	Requested   bool  // named in NVFS_BACKENDS: unavailability is a failure, not a skip
}

// SelectBackends picks from all according to spec (the value of
// NVFS_BACKENDS; "" means all) and probes each.
func SelectBackends(ctx context.Context, all []Backend, spec string) ([]Selected, error) {
	byName := map[string]Backend{}
	for _, b := range all {
		byName[b.Name] = b
	}
	var out []Selected
	if strings.TrimSpace(spec) == "" {
		for _, b := range all {
			out = append(out, Selected{Backend: b})
		}
	} else {
		for _, n := range strings.Split(spec, ",") {
			n = strings.TrimSpace(n)
			b, ok := byName[n]
			if !ok {
				return nil, fmt.Errorf("%s: unknown backend %q", EnvBackends, n)
			}
			out = append(out, Selected{Backend: b, Requested: true})
		}
	}
	for i := range out {
		if p := out[i].Backend.Probe; p != nil {
			out[i].Unavailable = p(ctx)
		}
	}
	return out, nil
}
