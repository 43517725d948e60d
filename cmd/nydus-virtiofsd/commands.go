package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// command is one subcommand: its name, one line of help, and its entry
// point, which takes the arguments after the name and returns the exit code.
type command struct {
	name, short string
	run         func(args []string) int
}

// commands lists the subcommands, in the order help shows them. To add
// one, write runX(args []string) int (parsing args with newCommand and
// execute, as runCheck does) and add its line here.
func commands() []command {
	return []command{
		{"virtiofs", "nydusd's virtiofs mode: a mount table over vhost-user, with nydusd's HTTP API (--apisock)", runVirtiofs},
		{"fuse", "mount a RAFS image on the host through /dev/fuse (nydusd fuse)", runFuse},
		{"check", "validate a RAFS image and verify its data against the chunk digests (nydus-image check); with --target, a Nydus image in a registry (nydusify check)", runCheck},
		{"unpack", "write a RAFS image's tree as a tar (nydus-image unpack)", runUnpack},
		{"ctl", "ask a running daemon's API: info, mounts, metrics, backend, cache, inflight, events (nydusctl)", runCtl},
		{"create", "build a RAFS image from a directory, tar or tar.gz (nydus-image create)", runCreate},
		{"convert", "convert an OCI image in a registry, OCI layout or docker save archive to a Nydus image in a registry (nydusify convert)", runConvert},
	}
}

// Exit codes, the same for the daemon and every subcommand.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // the command line is wrong
)

const prog = "nydus-virtiofsd"

// run dispatches a command line: a first word that is not an option names
// a subcommand (or help); otherwise it is the daemon's virtiofsd command
// line, which has no positional arguments.
func run(args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return runVirtiofsd(args)
	}
	name := args[0]
	if name == "help" {
		return runHelp(args[1:])
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(args[1:])
		}
	}
	msg := fmt.Sprintf("unknown subcommand %q", name)
	if s := suggest(name); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	fmt.Fprintf(os.Stderr, "%s: %s\n\n", prog, msg)
	writeSubcommands(os.Stderr)
	fmt.Fprintf(os.Stderr, "\nWith no subcommand, %s is the virtio-fs daemon: see '%s --help'.\n", prog, prog)
	return exitUsage
}

// runHelp is `nydus-virtiofsd help [SUBCOMMAND]`.
func runHelp(args []string) int {
	if len(args) == 0 {
		fmt.Print(virtiofsdUsage())
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run([]string{"--help"})
		}
	}
	return run(args) // reports the unknown name with the list
}

// subcommandNames lists the subcommands' names, comma-separated.
func subcommandNames() string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}

// suggest returns the subcommand a mistyped name probably meant.
func suggest(name string) string {
	root := &cobra.Command{Use: prog, SuggestionsMinimumDistance: 2}
	for _, c := range commands() {
		root.AddCommand(&cobra.Command{Use: c.name, Run: func(*cobra.Command, []string) {}})
	}
	if s := root.SuggestionsFor(name); len(s) > 0 {
		return s[0]
	}
	return ""
}

// writeSubcommands lists the subcommands with their one-line help.
func writeSubcommands(w io.Writer) {
	fmt.Fprintf(w, "Subcommands ('%s SUBCOMMAND --help' for each):\n", prog)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.short)
	}
}

// newCommand returns a cobra command for a subcommand: --flag style
// options (flags and positional arguments in any order), help with -h or
// --help (exit 0), errors left to execute.
func newCommand(name, usage, long string) *cobra.Command {
	cmd := &cobra.Command{
		Use:                   name + " " + usage,
		Long:                  long,
		Args:                  noArgs,
		DisableFlagsInUseLine: true,
		SilenceErrors:         true,
		SilenceUsage:          true,
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	return cmd
}

// noArgs refuses positional arguments with the first one named.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unexpected argument %q: %s takes flags only", args[0], cmd.Name())
	}
	return nil
}

// flagPathError says what went wrong with the file a flag names, once:
// "--flag PATH: no such file or directory" rather than the chain of
// operations that met it.
func flagPathError(flag, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == path {
		return fmt.Errorf("%s %s: %w", flag, path, pe.Err)
	}
	return fmt.Errorf("%s %s: %w", flag, path, err)
}

// usageError is a command-line mistake: exit code 2 and a pointer to
// --help.
type usageError struct{ error }

// usageErrorf makes a usageError.
func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// execute runs cmd on args: run gets the positional arguments and returns
// the exit code. Command-line errors (unknown flags, missing values, run
// returning a usageError through errp) exit 2 with the subcommand's name
// and a pointer to its help.
func execute(cmd *cobra.Command, args []string, run func(positional []string) error) int {
	root := &cobra.Command{Use: prog, SilenceErrors: true, SilenceUsage: true}
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(cmd)
	code := exitOK
	cmd.RunE = func(_ *cobra.Command, pos []string) error {
		err := run(pos)
		var ue usageError
		switch {
		case err == nil:
		case errors.As(err, &ue):
			return err
		default:
			fmt.Fprintf(os.Stderr, "%s %s: %v\n", prog, cmd.Name(), err)
			code = exitFailure
		}
		return nil
	}
	root.SetArgs(append([]string{cmd.Name()}, args...))
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\nRun '%s %s --help' for usage.\n", prog, cmd.Name(), err, prog, cmd.Name())
		return exitUsage
	}
	return code
}

// required returns a usageError naming the first of the flags that was
// not given a value.
func required(fs *pflag.FlagSet, names ...string) error {
	for _, n := range names {
		if f := fs.Lookup(n); f != nil && f.Value.String() == "" {
			return usageErrorf("--%s is required", n)
		}
	}
	return nil
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
