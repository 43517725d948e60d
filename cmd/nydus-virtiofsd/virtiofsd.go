package main

import (
	"fmt"
	"os"
	"strings"
)

// capabilities is what --print-capabilities prints, in the vhost-user.json
// shape libvirt reads.
const capabilities = `{
  "type": "fs",
  "features": [
    "separate-options"
  ]
}`

// daemonOptionsHelp describes the options the daemon acts on, shared by
// both command lines.
const daemonOptionsHelp = `What to serve:
  --shared-dir=DIR          share this host directory read-write (also -o source=DIR)
  --bootstrap=FILE          serve this RAFS image read-only instead (a bootstrap, or a blob
                            with the bootstrap inlined)
  --blob-dir=DIR            where the image's blobs are, each file named by its blob id
                            (also --localfs-dir); default: the bootstrap's own directory.
                            Every blob is opened at start: a missing one stops the daemon
                            with its id and where it was looked for

Share options (--shared-dir):
  --cache=never|auto|metadata|always   caching policy (default auto)
  --xattr                   enable extended attributes
  --readonly                refuse every change to the share
  --announce-submounts      let the guest see host submounts (the default)
  --no-announce-submounts   show host submounts as plain directories
  --allow-direct-io         honour O_DIRECT opens from the guest
  --no-readdirplus          never offer READDIRPLUS: the guest lists with READDIR and
                            looks each name up (also for images)
  --inode-file-handles=never|prefer|mandatory   identify inodes by file handle (default never, as virtiofsd)
  --sandbox=MODE            namespace: own mount/pid/net/ipc namespaces whose root is the share;
                            chroot: chroot(2) into the share; none. Default namespace
                            (none in the virtiofs subcommand); images are not sandboxed

Daemon:
  --socket-group=GROUP      let GROUP (a name or number) connect to the vhost-user socket:
                            its group, mode 0660 (without it 0600, the owner only)
  --thread-pool-size=N      at least N workers per request queue (default 4)
  --kick-wait=MODE          how a queue waits for the guest: inline-ppoll (default), ppoll, inline, poller
                            (docs/benchmarks.md, issue 15)
  --poll-before-sleep=DUR   look at an empty queue this long before sleeping (default 200us; 0: never)
  --request-queues=N        request queues besides hiprio (default 1)
  --rlimit-nofile=N         set RLIMIT_NOFILE to N (0: leave it; default: raise the soft
                            limit to the hard one)
  --keep-listening          accept a new frontend after one disconnects instead of exiting
  --log-level=LEVEL         error|warn|info|debug|trace|off (default info; -d is debug)
  --log-file=FILE           append the log to FILE instead of stderr
  --syslog                  log to syslog
  --seccomp=kill|log|trap|none   action for a system call off the allow-list (default kill)
  --modcaps=+cap:-cap       change the capabilities kept (see docs/security.md)
  --xattrmap=RULES          map or refuse xattr names (virtiofsd's rules; default refuses trusted.*)
  --log-format=text|json    log line format (default text)
  --metrics-addr=HOST:PORT  also serve Prometheus metrics on GET http://HOST:PORT/metrics
  --slow-request=DURATION   log FUSE requests slower than this at warn (default 1s; 0: never)
  --no-measure-latency      do not time requests (counts only)
  --otlp-endpoint=URL       export traces over OTLP/HTTP (default: $OTEL_EXPORTER_OTLP_ENDPOINT; unset: off)
  --trace-sample-every=N    trace one FUSE request in N (default 100)
  --print-capabilities      print the vhost-user backend capabilities and exit
  -h, --help                print this help and exit
  -V, --version             print the version and exit
`

// virtiofsdUsage is the daemon's --help (and `nydus-virtiofsd help`).
func virtiofsdUsage() string {
	var b strings.Builder
	fmt.Fprintf(&b, `Usage: %[1]s [OPTIONS] (--socket-path=PATH | --fd=N) (--shared-dir=DIR | --bootstrap=FILE [--blob-dir=DIR])
       %[1]s SUBCOMMAND [FLAGS]

A vhost-user virtio-fs daemon with virtiofsd's command line: --opt=value and
--opt value both work, and the C virtiofsd's -o opt[,opt...] (source=, cache=,
xattr, no_xattr, log_level=, sandbox=, announce_submounts, readonly,
readdirplus, no_readdirplus, debug).

Where the VMM connects:
  --socket-path=PATH        listen on this unix socket (also --socket). A lock is held on
                            PATH.pid while the daemon runs; if another daemon serves PATH,
                            the daemon refuses to start; a stale socket file is removed
  --fd=N                    serve an inherited listening socket

%[2]s
Accepted for virtiofsd compatibility and ignored, with a warning:
%[3]s

Unknown options are warned about and ignored too (Kata appends
virtio_fs_extra_args verbatim).

`, prog, daemonOptionsHelp, ignoredFlags(virtiofsdFlags()))
	writeSubcommands(&b)
	return b.String()
}

// runVirtiofsd runs the daemon with virtiofsd's command line.
func runVirtiofsd(args []string) int {
	return runParsed(prog, parseVirtiofsd, virtiofsdUsage, args)
}

// runParsed parses args, handles the options that print and exit,
// validates the configuration and runs the daemon.
func runParsed(name string, parse func([]string) (daemonConfig, error), usage func() string, args []string) int {
	c, err := parse(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
		return exitUsage
	}
	if code, done := earlyExit(&c, usage); done {
		return code
	}
	if err := c.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
		return exitUsage
	}
	return runDaemon(c)
}

// earlyExit handles --help, --version and --print-capabilities.
func earlyExit(c *daemonConfig, usage func() string) (int, bool) {
	switch {
	case c.Help:
		fmt.Print(usage())
	case c.Version:
		fmt.Printf("%s version %s\n", prog, version)
	case c.PrintCapabilities:
		fmt.Println(capabilities)
	default:
		return 0, false
	}
	return exitOK, true
}
