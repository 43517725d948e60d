package main

const nydusdUsage = `Usage: nydus-virtiofsd virtiofs --sock PATH [--apisock PATH] [--log-level LEVEL] [--config FILE]
                                [--bootstrap FILE [--localfs-dir DIR] | --shared-dir DIR]
                                [--virtual-mountpoint PATH] [--id ID --supervisor PATH]

nydusd's virtiofs mode: a mount table served over vhost-user. --shared-dir or
--bootstrap is mounted at --virtual-mountpoint (default /); with --apisock,
nydusd's HTTP API mounts and unmounts more (what Kata's virtio-fs-nydus does).
--hybrid-mode is accepted. virtiofsd's options are accepted too.
`

// runVirtiofs runs the daemon with nydusd's virtiofs command line.
func runVirtiofs(args []string) int {
	return runParsed("nydus-virtiofsd virtiofs", parseNydusdVirtiofs, nydusdUsage, args, nil)
}
