package main

const nydusdUsage = `Usage: nydus-virtiofsd virtiofs --sock PATH [--apisock PATH] [--log-level LEVEL]
                                [--bootstrap FILE [--localfs-dir DIR] | --shared-dir DIR]

nydusd's virtiofs mode: serve a RAFS image or a host directory over vhost-user.
--hybrid-mode is accepted. virtiofsd's options are accepted too.
`

// runVirtiofs runs the daemon with nydusd's virtiofs command line.
func runVirtiofs(args []string) int {
	return runParsed("nydus-virtiofsd virtiofs", parseNydusdVirtiofs, nydusdUsage, args, func(c *daemonConfig) {
		if c.APISock != "" {
			c.Warnings = append(c.Warnings, "--apisock: the nydusd HTTP API is not implemented yet")
		}
		if c.ConfigFile != "" {
			c.Warnings = append(c.Warnings, "--config: nydusd configuration files are not read in virtiofs mode yet")
		}
	})
}
