package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// daemonConfig is what the virtiofsd-style command line (and nydusd's
// virtiofs subcommand) asks of the daemon.
type daemonConfig struct {
	SocketPath  string // --socket-path: listen here
	SocketGroup string // --socket-group: a group (name or number) that may connect too
	FD          int    // --fd: an inherited listening socket; -1 when unset
	// RlimitNofile is --rlimit-nofile: -1 (unset) raises the soft limit to
	// the hard one; 0 leaves both alone; n sets both to n. (The Go runtime
	// itself raises the soft limit to the hard one at start, so -1 and 0
	// end alike: virtiofsd's 0 means "a manager set it, keep it".)
	RlimitNofile int64
	// NoReadDirPlus is --no-readdirplus / -o no_readdirplus: never offer
	// READDIRPLUS, so the guest lists directories with plain READDIR.
	NoReadDirPlus bool

	SharedDir string // --shared-dir / -o source=: a host directory to share
	Bootstrap string // --bootstrap: a RAFS image to serve instead
	BlobDir   string // --blob-dir / --localfs-dir: where the image's blobs are

	Cache             string // never|auto|metadata|always
	Xattr             bool
	AnnounceSubmounts bool
	Readonly          bool
	AllowDirectIO     bool
	InodeFileHandles  string // never|prefer|mandatory
	ThreadPoolSize    int    // workers per request queue; 0 = default
	RequestQueues     int    // request queues besides hiprio
	KeepListening     bool
	KickWait          string        // --kick-wait: vhostuser.Options.KickWait
	PollBeforeSleep   time.Duration // --poll-before-sleep: vhostuser.Options.PollBeforeSleep

	Nydusd            bool   // nydusd's command line: serve a mount table
	APISock           string // nydusd's --apisock
	ConfigFile        string // nydusd's --config
	VirtualMountpoint string // nydusd's --virtual-mountpoint (default /)
	ID, Supervisor    string // nydusd's --id and --supervisor, reported by the API
	PrefetchFiles     string // nydusd's --prefetch-files: a file listing image paths to prefetch

	LogLevel string
	LogFile  string // --log-file: log here instead of stderr
	Syslog   bool
	Sandbox  string
	Security securityConfig // --modcaps, --seccomp, --xattrmap (security.go)

	Observe observeConfig // --metrics-addr, --log-format, --slow-request, --no-measure-latency

	// SocketFlag is the option that names the socket, for messages:
	// --socket-path, or --sock in nydusd's virtiofs mode.
	SocketFlag string

	PrintCapabilities bool
	Help              bool
	Version           bool

	// Warnings lists what was accepted but is not acted on, to be logged
	// once logging is set up.
	Warnings []string
}

func defaultConfig() daemonConfig {
	// Submounts are announced by default, as the Rust virtiofsd does since 1.6.
	// Inodes are held by O_PATH fds, not file handles, as the Rust
	// virtiofsd's default (and the C virtiofsd's only way): a handle costs
	// a name_to_handle_at per new inode, 5-15 % of a guest's directory
	// walk (docs/benchmarks.md, issue 15), and CAP_DAC_READ_SEARCH;
	// --inode-file-handles=prefer bounds the fds a guest can make the
	// daemon hold instead. Queues wait for kicks in ppoll and poll briefly
	// before they do (vhostuser.RecommendedKickWait and
	// RecommendedPollBeforeSleep say why).
	return daemonConfig{FD: -1, Cache: "auto", LogLevel: "info", Sandbox: "namespace", RequestQueues: 1,
		AnnounceSubmounts: true, InodeFileHandles: "never", SocketFlag: "--socket-path",
		KickWait: string(vhostuser.RecommendedKickWait), PollBeforeSleep: vhostuser.RecommendedPollBeforeSleep, RlimitNofile: -1}
}

// flagKind says how a long option takes its value.
type flagKind int

const (
	boolFlag flagKind = iota
	valueFlag
)

type flagSpec struct {
	kind flagKind
	// set applies the option; nil means "accepted, not implemented": the
	// option is recorded as a warning.
	set func(c *daemonConfig, v string) error
}

func setString(dst func(c *daemonConfig) *string) func(*daemonConfig, string) error {
	return func(c *daemonConfig, v string) error { *dst(c) = v; return nil }
}

func setBool(dst func(c *daemonConfig) *bool, val bool) func(*daemonConfig, string) error {
	return func(c *daemonConfig, _ string) error { *dst(c) = val; return nil }
}

func setInt(dst func(c *daemonConfig) *int, name string) func(*daemonConfig, string) error {
	return func(c *daemonConfig, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("--%s: want a non-negative number, got %q", name, v)
		}
		*dst(c) = n
		return nil
	}
}

func setCache(c *daemonConfig, v string) error {
	switch v {
	case "never", "none":
		c.Cache = "never"
	case "auto", "metadata", "always":
		c.Cache = v
	default:
		return fmt.Errorf("--cache: want never, auto, metadata or always, got %q", v)
	}
	return nil
}

func setSandbox(c *daemonConfig, v string) error {
	switch v {
	case "namespace", "chroot", "none":
		c.Sandbox = v
		return nil
	}
	return fmt.Errorf("--sandbox: want namespace, chroot or none, got %q", v)
}

func setInodeFileHandles(c *daemonConfig, v string) error {
	switch v {
	case "never", "prefer", "mandatory":
		c.InodeFileHandles = v
		return nil
	}
	return fmt.Errorf("--inode-file-handles: want never, prefer or mandatory, got %q", v)
}

func setLogLevel(c *daemonConfig, v string) error {
	switch v {
	case "trace", "debug", "info", "warn", "error", "off":
		c.LogLevel = v
	case "err":
		c.LogLevel = "error"
	case "warning":
		c.LogLevel = "warn"
	default:
		return fmt.Errorf("--log-level: want error, warn, info, debug, trace or off, got %q", v)
	}
	return nil
}

// virtiofsdFlags are the long options of the Rust virtiofsd (and the C one's
// where they differ). Options with a nil setter are accepted and ignored with
// a warning, because Kata appends virtio_fs_extra_args verbatim.
func virtiofsdFlags() map[string]flagSpec {
	return map[string]flagSpec{
		"socket-path":           {valueFlag, setString(func(c *daemonConfig) *string { return &c.SocketPath })},
		"socket":                {valueFlag, setString(func(c *daemonConfig) *string { return &c.SocketPath })},
		"fd":                    {valueFlag, setInt(func(c *daemonConfig) *int { return &c.FD }, "fd")},
		"shared-dir":            {valueFlag, setString(func(c *daemonConfig) *string { return &c.SharedDir })},
		"bootstrap":             {valueFlag, setString(func(c *daemonConfig) *string { return &c.Bootstrap })},
		"blob-dir":              {valueFlag, setString(func(c *daemonConfig) *string { return &c.BlobDir })},
		"localfs-dir":           {valueFlag, setString(func(c *daemonConfig) *string { return &c.BlobDir })},
		"cache":                 {valueFlag, setCache},
		"thread-pool-size":      {valueFlag, setInt(func(c *daemonConfig) *int { return &c.ThreadPoolSize }, "thread-pool-size")},
		"kick-wait":             {valueFlag, setKickWait},
		"poll-before-sleep":     {valueFlag, setPollBeforeSleep},
		"request-queues":        {valueFlag, setInt(func(c *daemonConfig) *int { return &c.RequestQueues }, "request-queues")},
		"announce-submounts":    {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.AnnounceSubmounts }, true)},
		"no-announce-submounts": {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.AnnounceSubmounts }, false)},
		"xattr":                 {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.Xattr }, true)},
		"readonly":              {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.Readonly }, true)},
		"keep-listening":        {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.KeepListening }, true)},
		"syslog":                {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.Syslog }, true)},
		"log-level":             {valueFlag, setLogLevel},
		"log-file":              {valueFlag, setString(func(c *daemonConfig) *string { return &c.LogFile })},
		"sandbox":               {valueFlag, setSandbox},
		"xattrmap":              {valueFlag, setXattrmap},
		"seccomp":               {valueFlag, setSeccomp},
		"modcaps":               {valueFlag, setModcaps},
		"metrics-addr":          {valueFlag, setString(func(c *daemonConfig) *string { return &c.Observe.MetricsAddr })},
		"log-format":            {valueFlag, setLogFormat},
		"slow-request":          {valueFlag, setSlowRequest},
		"no-measure-latency":    {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.Observe.NoMeasureLatency }, true)},
		"otlp-endpoint":         {valueFlag, setString(func(c *daemonConfig) *string { return &c.Observe.OTLPEndpoint })},
		"trace-sample-every":    {valueFlag, setInt(func(c *daemonConfig) *int { return &c.Observe.TraceEvery }, "trace-sample-every")},
		"print-capabilities":    {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.PrintCapabilities }, true)},
		"socket-group":          {valueFlag, setString(func(c *daemonConfig) *string { return &c.SocketGroup })},
		"rlimit-nofile":         {valueFlag, setRlimitNofile},
		"no-readdirplus":        {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.NoReadDirPlus }, true)},
		"help":                  {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.Help }, true)},
		"version":               {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.Version }, true)},

		// Accepted for compatibility; not acted on.
		"tag":                      {valueFlag, nil},
		"uid-map":                  {valueFlag, nil},
		"gid-map":                  {valueFlag, nil},
		"translate-uid":            {valueFlag, nil},
		"translate-gid":            {valueFlag, nil},
		"inode-file-handles":       {valueFlag, setInodeFileHandles},
		"migration-mode":           {valueFlag, nil},
		"migration-on-error":       {valueFlag, nil},
		"posix-acl":                {boolFlag, nil},
		"security-label":           {boolFlag, nil},
		"allow-mmap":               {boolFlag, nil},
		"writeback":                {boolFlag, nil},
		"allow-direct-io":          {boolFlag, setBool(func(c *daemonConfig) *bool { return &c.AllowDirectIO }, true)},
		"killpriv-v2":              {boolFlag, nil},
		"preserve-noatime":         {boolFlag, nil},
		"no-killpriv-v2":           {boolFlag, nil},
		"migration-verify-handles": {boolFlag, nil},
		"migration-confirm-paths":  {boolFlag, nil},
		"daemonize":                {boolFlag, nil},
	}
}

// parseVirtiofsd parses virtiofsd's command line: --name=value and
// --name value, the C virtiofsd's -o opt[,opt...], and -f/-d/-h/-V.
func parseVirtiofsd(args []string) (daemonConfig, error) {
	c := defaultConfig()
	short := map[string]string{"-h": "help", "-V": "version"}
	err := parseArgs(&c, virtiofsdFlags(), short, args)
	return c, err
}

// parseArgs applies args to c. An unknown long option is a warning, not an
// error: it takes the next argument as its value when that does not start
// with '-' (neither virtiofsd nor nydusd virtiofs has positional arguments).
// short maps single-dash options to their long names.
func parseArgs(c *daemonConfig, specs map[string]flagSpec, short map[string]string, args []string) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if long, ok := short[a]; ok {
			a = "--" + long
		}
		switch {
		case a == "-o":
			if i+1 >= len(args) {
				return fmt.Errorf("-o needs an argument")
			}
			i++
			if err := parseDashO(c, args[i]); err != nil {
				return err
			}
		case strings.HasPrefix(a, "-o") && !strings.HasPrefix(a, "--"):
			if err := parseDashO(c, a[2:]); err != nil {
				return err
			}
		case a == "-f":
			// Foreground is the only mode.
		case a == "-d":
			c.LogLevel = "debug"
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			spec, known := specs[name]
			if !known {
				if !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
					i++
				}
				c.Warnings = append(c.Warnings, fmt.Sprintf("unknown option --%s ignored", name))
				continue
			}
			if spec.kind == valueFlag && !hasVal {
				if i+1 >= len(args) {
					return fmt.Errorf("--%s needs a value", name)
				}
				i++
				val = args[i]
			}
			if spec.kind == boolFlag && hasVal {
				return fmt.Errorf("--%s takes no value", name)
			}
			if spec.set == nil {
				c.Warnings = append(c.Warnings, fmt.Sprintf("option --%s is accepted but not implemented", name))
				continue
			}
			if err := spec.set(c, val); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected argument %q (the daemon takes options only; subcommands come first: %s)", a, subcommandNames())
		}
	}
	return nil
}

// parseNydusdVirtiofs parses the arguments of nydusd's virtiofs subcommand
// (and nydusd's global options, which may stand on either side of it):
//
//	virtiofs --sock S [--apisock A] [--log-level L] [--hybrid-mode]
//	         [--bootstrap B [--localfs-dir D] | --shared-dir S] [--config C]
//
// Kata appends virtio_fs_extra_args verbatim, so virtiofsd's options are
// accepted too.
func parseNydusdVirtiofs(args []string) (daemonConfig, error) {
	c := defaultConfig()
	c.Nydusd = true
	c.VirtualMountpoint = "/"
	c.Sandbox = "none" // nydusd has no sandbox; Kata mounts host paths into it later
	c.SocketFlag = "--sock"
	err := parseArgs(&c, nydusdFlags(), nydusdShort(), args)
	if c.Supervisor != "" {
		c.Warnings = append(c.Warnings, fmt.Sprintf("--supervisor %s: live upgrade and failover are not supported; "+
			"the supervisor is never contacted, only reported by GET /api/v1/daemon", c.Supervisor))
	}
	return c, err
}

// nydusdFlags are the long options of nydusd's virtiofs mode: nydusd's
// own on top of virtiofsd's.
func nydusdFlags() map[string]flagSpec {
	specs := virtiofsdFlags()
	specs["sock"] = specs["socket-path"]
	specs["apisock"] = flagSpec{valueFlag, setString(func(c *daemonConfig) *string { return &c.APISock })}
	specs["config"] = flagSpec{valueFlag, setString(func(c *daemonConfig) *string { return &c.ConfigFile })}
	specs["id"] = flagSpec{valueFlag, setString(func(c *daemonConfig) *string { return &c.ID })}
	specs["supervisor"] = flagSpec{valueFlag, setString(func(c *daemonConfig) *string { return &c.Supervisor })}
	specs["virtual-mountpoint"] = flagSpec{valueFlag, setString(func(c *daemonConfig) *string { return &c.VirtualMountpoint })}
	specs["prefetch-files"] = flagSpec{valueFlag, setString(func(c *daemonConfig) *string { return &c.PrefetchFiles })}
	specs["log-rotation-size"] = flagSpec{valueFlag, nil}
	specs["hybrid-mode"] = flagSpec{boolFlag, func(*daemonConfig, string) error { return nil }}
	specs["upgrade"] = flagSpec{boolFlag, nil}
	return specs
}

// nydusdShort are nydusd's single-letter options.
func nydusdShort() map[string]string {
	return map[string]string{
		"-A": "apisock", "-C": "config", "-l": "log-level", "-L": "log-file",
		"-B": "bootstrap", "-D": "localfs-dir", "-s": "shared-dir", "-m": "virtual-mountpoint",
		"-h": "help", "-V": "version",
	}
}

// ignoredFlags lists the options specs accepts without acting on them.
func ignoredFlags(specs map[string]flagSpec) string {
	var names []string
	for _, n := range sortedKeys(specs) {
		if specs[n].set == nil {
			names = append(names, "--"+n)
		}
	}
	return wrap(strings.Join(names, " "), 78, "  ")
}

// wrap breaks s at spaces into lines of at most width, each after indent.
func wrap(s string, width int, indent string) string {
	var b strings.Builder
	line := indent
	for _, w := range strings.Fields(s) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	b.WriteString(line)
	return b.String()
}

// parseDashO applies the C virtiofsd's comma-separated -o options.
func parseDashO(c *daemonConfig, opts string) error {
	for _, o := range splitOpts(opts) {
		if o == "" {
			continue
		}
		name, val, _ := strings.Cut(o, "=")
		var err error
		switch name {
		case "source":
			c.SharedDir = val
		case "cache":
			err = setCache(c, val)
		case "xattr":
			c.Xattr = true
		case "no_xattr":
			c.Xattr = false
		case "log_level":
			err = setLogLevel(c, val)
		case "sandbox":
			err = setSandbox(c, val)
		case "xattrmap":
			err = setXattrmap(c, val)
		case "modcaps":
			err = setModcaps(c, val)
		case "announce_submounts":
			c.AnnounceSubmounts = true
		case "readdirplus":
			c.NoReadDirPlus = false
		case "no_readdirplus":
			c.NoReadDirPlus = true
		case "readonly":
			c.Readonly = true
		case "debug":
			c.LogLevel = "debug"
		default:
			c.Warnings = append(c.Warnings, fmt.Sprintf("-o %s is accepted but not implemented", name))
		}
		if err != nil {
			return fmt.Errorf("-o %s: %w", o, err)
		}
	}
	return nil
}

// splitOpts splits a -o argument at commas; as in libfuse, a backslash
// escapes the next character, so "source=/a\\,b" names the directory "/a,b".
func splitOpts(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(out, cur.String())
}

// validate checks that the options make a daemon that can run.
func (c *daemonConfig) validate() error {
	if c.SocketGroup != "" && c.FD >= 0 {
		c.Warnings = append(c.Warnings, "--socket-group is ignored with --fd: the socket is not ours to change")
	}
	switch {
	case c.SocketPath == "" && c.FD < 0:
		return fmt.Errorf("%s or --fd is required: where the VMM connects", c.SocketFlag)
	case c.SocketPath != "" && c.FD >= 0:
		return fmt.Errorf("%s and --fd are mutually exclusive", c.SocketFlag)
	case c.SharedDir == "" && c.Bootstrap == "" && c.APISock == "" && c.Nydusd:
		return fmt.Errorf("--shared-dir, --bootstrap or --apisock is required: what to serve")
	case c.SharedDir == "" && c.Bootstrap == "" && c.APISock == "":
		return fmt.Errorf("--shared-dir (or --bootstrap) is required: what to serve")
	case c.SharedDir != "" && c.Bootstrap != "":
		return fmt.Errorf("--shared-dir and --bootstrap are mutually exclusive")
	case c.PrefetchFiles != "" && c.Bootstrap == "":
		return fmt.Errorf("--prefetch-files needs --bootstrap: it lists paths in that image (an API mount takes prefetch_files in its request)")
	case c.RequestQueues < 1:
		return fmt.Errorf("--request-queues must be at least 1")
	}
	return nil
}

func setRlimitNofile(c *daemonConfig, v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("--rlimit-nofile: want a number of files (0: leave the limit alone), got %q", v)
	}
	c.RlimitNofile = n
	return nil
}

func setKickWait(c *daemonConfig, v string) error {
	switch vhostuser.KickWait(v) {
	case vhostuser.KickWaitPoller, vhostuser.KickWaitPpoll, vhostuser.KickWaitInline, vhostuser.KickWaitInlinePpoll:
		c.KickWait = v
		return nil
	}
	return fmt.Errorf("--kick-wait: want poller, ppoll, inline or inline-ppoll, got %q", v)
}

func setPollBeforeSleep(c *daemonConfig, v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("--poll-before-sleep: want a duration such as 20us or 0 (never), got %q", v)
	}
	c.PollBeforeSleep = d
	return nil
}
