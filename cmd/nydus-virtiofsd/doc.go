// Command nydus-virtiofsd is a vhost-user virtio-fs daemon that serves host
// directories (as virtiofsd does) and Nydus RAFS images (as nydusd does),
// and builds and checks RAFS images (as nydus-image does).
//
// With no subcommand it takes virtiofsd's command line, parsed by hand
// (flags.go): Kata appends virtio_fs_extra_args verbatim, so virtiofsd's
// exact forms (--opt=value, --opt value, -o opt[,opt...]) must work and
// unknown options are warned about instead of refused. The subcommands
// are listed in commands.go; all but virtiofs (which, like the daemon,
// takes Kata's command lines) parse their flags with cobra.
//
// Exit codes: 0 success (and --help), 1 failure, 2 a wrong command line.
package main
