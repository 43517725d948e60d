// Command nydus-virtiofsd is a vhost-user virtio-fs daemon that serves host
// directories (as virtiofsd does) and Nydus RAFS images (as nydusd does).
//
// With no subcommand it takes virtiofsd's command line. The subcommands are:
//
//	virtiofs  nydusd's virtiofs mode (--sock, --apisock, --bootstrap, ...)
//	check     parse and validate a RAFS image (nydus-image check)
//	unpack    write a RAFS image's tree as a tar (nydus-image unpack)
//	fuse      mount a RAFS image on the host through /dev/fuse (nydusd fuse)
//	create    build a RAFS image (nydus-image create)
package main

import (
	"fmt"
	"os"
)

// subcommand runs with the arguments after its name and returns the exit code.
type subcommand func(args []string) int

func main() {
	cmds := map[string]subcommand{
		"virtiofs": runVirtiofs,
		"check":    runCheck,
		"unpack":   runUnpack,
		"fuse":     runFuse,
		"create":   runCreate,
		"convert":  runConvert,
	}
	if len(os.Args) > 1 {
		if cmd, ok := cmds[os.Args[1]]; ok {
			os.Exit(cmd(os.Args[2:]))
		}
	}
	os.Exit(runVirtiofsd(os.Args[1:]))
}

// notYet is what a subcommand that has not landed yet answers.
func notYet(name string) int {
	fmt.Fprintf(os.Stderr, "nydus-virtiofsd: %s is not implemented yet\n", name)
	return 2
}
