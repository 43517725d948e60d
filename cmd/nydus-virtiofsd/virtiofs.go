package main

import "fmt"

// nydusdUsage is `virtiofs --help`.
func nydusdUsage() string {
	return fmt.Sprintf(`Usage: %[1]s virtiofs --sock PATH [--apisock PATH] [OPTIONS]
                        [--bootstrap FILE [--localfs-dir DIR] | --shared-dir DIR]

nydusd's virtiofs mode: a mount table served over vhost-user. --shared-dir or
--bootstrap is mounted at --virtual-mountpoint; with --apisock, nydusd's HTTP
API mounts and unmounts more (what Kata's shared_fs = "virtio-fs-nydus" does).
Options take --opt value or --opt=value.

nydusd's options:
  --sock PATH               listen on this vhost-user socket (required unless --fd). A lock
                            is held on PATH.pid; if another daemon serves PATH, the daemon
                            refuses to start; a stale socket file is removed (virtiofsd's
                            --socket-path and --socket are the same)
  --fd=N                    serve an inherited listening socket instead
  -A, --apisock PATH        serve nydusd's HTTP API on this unix socket (refused when a
                            live daemon answers there; a stale socket file is removed)
  -C, --config FILE         nydusd configuration (v1 or v2, JSON or TOML) for --bootstrap and for API
                            mounts whose config is empty
  -B, --bootstrap FILE      mount this RAFS image (also -D/--localfs-dir DIR for its blobs)
  -s, --shared-dir DIR      mount this host directory
  -m, --virtual-mountpoint PATH   where in the mount table (default /)
  --prefetch-files FILE     with --bootstrap and a --config that has a blob cache: prefetch
                            the image paths FILE lists, one a line ("/" alone: the whole
                            image), instead of the bootstrap's prefetch table
  -l, --log-level LEVEL     error|warn|info|debug|trace (default info)
  -L, --log-file FILE       append the log to FILE instead of stderr
  --id ID                   reported by GET /api/v1/daemon
  --supervisor PATH         reported by GET /api/v1/daemon; live upgrade and failover are not
                            supported, so it is never contacted (a warning says so)
  --hybrid-mode             accepted (no effect, as in nydusd's virtiofs mode)

virtiofsd's options are accepted too (Kata appends virtio_fs_extra_args):
%[2]s
Accepted and ignored, with a warning:
%[3]s

Unknown options are warned about and ignored too.
`, prog, daemonOptionsHelp, ignoredFlags(nydusdFlags()))
}

// runVirtiofs runs the daemon with nydusd's virtiofs command line.
func runVirtiofs(args []string) int {
	return runParsed(prog+" virtiofs", parseNydusdVirtiofs, nydusdUsage, args)
}
