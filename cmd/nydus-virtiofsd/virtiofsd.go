package main

import (
	"fmt"
	"os"
)

// capabilities is what --print-capabilities prints, in the vhost-user.json
// shape libvirt reads.
const capabilities = `{
  "type": "fs",
  "features": [
    "separate-options"
  ]
}`

const virtiofsdUsage = `Usage: nydus-virtiofsd [OPTIONS] (--socket-path=PATH | --fd=N) (--shared-dir=DIR | --bootstrap=FILE --blob-dir=DIR)

A virtio-fs vhost-user daemon with virtiofsd's command line.

  --socket-path=PATH        listen on this unix socket (a stale file is removed)
  --fd=N                    serve an inherited listening socket
  --shared-dir=DIR          share this host directory (also -o source=DIR)
  --bootstrap=FILE          serve this RAFS image (a bootstrap, or a blob with it inlined) instead
  --blob-dir=DIR            where the image's blobs are (also --localfs-dir)
  --cache=never|auto|metadata|always   caching policy (default auto)
  --xattr                   enable extended attributes
  --readonly                refuse every change to the share
  --announce-submounts      let the guest see host submounts
  --thread-pool-size=N      at least N workers per request queue (default 4)
  --request-queues=N        request queues besides hiprio (default 1)
  --keep-listening          accept a new frontend after one disconnects
  --log-level=LEVEL         error|warn|info|debug|trace|off (default info)
  --syslog                  log to syslog
  --sandbox=MODE            namespace (default: own mount/pid/net/ipc namespaces, root is the share),
                            chroot (into the share) or none. Images are not sandboxed.
  --seccomp=kill|log|trap|none   action for a system call off the allow-list (default kill)
  --modcaps=+cap:-cap       change the capabilities kept (see docs/security.md)
  --xattrmap=RULES          map or refuse xattr names (virtiofsd's rules; default refuses trusted.*)
  --print-capabilities      print the vhost-user backend capabilities and exit
  -o opt[,opt...]           the C virtiofsd's options: source=, cache=, xattr, log_level=, sandbox=
  -V, --version             print the version and exit

Subcommands: virtiofs (nydusd's), check, unpack, fuse, create. Unknown options are
warned about and ignored, as Kata appends virtio_fs_extra_args verbatim.
`

// runVirtiofsd runs the daemon with virtiofsd's command line.
func runVirtiofsd(args []string) int {
	return runParsed("nydus-virtiofsd", parseVirtiofsd, virtiofsdUsage, args, nil)
}

// runParsed parses args, handles the options that print and exit, lets
// adjust add to the configuration, validates it and runs the daemon.
func runParsed(name string, parse func([]string) (daemonConfig, error), usage string, args []string, adjust func(*daemonConfig)) int {
	c, err := parse(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n%s", name, err, usage)
		return 2
	}
	if code, done := earlyExit(&c, usage); done {
		return code
	}
	if adjust != nil {
		adjust(&c)
	}
	if err := c.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	return runDaemon(c)
}

// earlyExit handles --help, --version and --print-capabilities.
func earlyExit(c *daemonConfig, usage string) (int, bool) {
	switch {
	case c.Help:
		fmt.Print(usage)
	case c.Version:
		fmt.Printf("nydus-virtiofsd version %s\n", version)
	case c.PrintCapabilities:
		fmt.Println(capabilities)
	default:
		return 0, false
	}
	return 0, true
}
