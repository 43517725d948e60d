package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// Mode is a --sandbox value.
type Mode string

// The sandbox modes, as virtiofsd names them.
const (
	// Namespace re-executes the daemon in new mount, pid, net and ipc
	// namespaces and pivots into the share.
	Namespace Mode = "namespace"
	// Chroot chroots the daemon process into the shared directory.
	Chroot Mode = "chroot"
	// None leaves the process as it is.
	None Mode = "none"
)

// childEnv marks the re-executed child of namespace mode; its value is the
// inherited listener's fd number.
const childEnv = "NYDUS_VIRTIOFSD_SANDBOX_CHILD"

// inheritedFD is the listener's fd in the child (ExtraFiles[0]).
const inheritedFD = 3

// DefaultStopTimeout is how long the namespace parent waits after
// forwarding a stop signal before it kills the child.
const DefaultStopTimeout = 900 * time.Millisecond

// Config says how to confine the daemon.
type Config struct {
	Mode Mode
	// SharedDir is the host directory to confine the daemon to.
	SharedDir string
	// Logger gets the sandbox's own messages; nil discards them.
	Logger logrus.FieldLogger
	// Args is the command line the namespace child is started with
	// (default os.Args; Args[0] is only its name, the binary is
	// /proc/self/exe).
	Args []string
	// StopTimeout is how long the namespace parent waits for the child
	// after forwarding SIGTERM or SIGINT before it kills it (default
	// DefaultStopTimeout).
	StopTimeout time.Duration
}

// Sandbox confines the calling process as its Config says. Make it with
// New, then call Listener and Enter, in that order, once each.
type Sandbox struct {
	cfg   Config
	child bool // this process is namespace mode's re-executed child
	log   logrus.FieldLogger
}

// Result is what Enter reports.
type Result struct {
	// Exited is true in namespace mode's parent: the sandboxed child has
	// run and exited, and the caller should exit with ExitCode.
	Exited   bool
	ExitCode int
	// SharedDir is the path of the shared directory from now on: "/" in
	// namespace and chroot modes, the configured path in none.
	SharedDir string
	// Confined is true when host paths no longer mean what they did: the
	// caller must not remove its socket path or open any other host path.
	Confined bool
	// ProcSelfFD, when confined, is an O_PATH descriptor of this process's
	// /proc/self/fd directory, opened before confinement, for fd-relative
	// use (openat(ProcSelfFD, "N"); passthrough.Options.ProcSelfFD). It is
	// the only way to reach /proc/self/fd: the path would resolve in the
	// share. The caller owns it.
	ProcSelfFD *os.File
	// Confiner is the thread Confine drops capabilities from (chroot and
	// namespace modes; nil otherwise). Pass it to Confine, which closes it.
	Confiner *Confiner
}

// New checks c and prepares a sandbox. It reads the environment once to
// learn whether this process is namespace mode's re-executed child.
func New(c Config) (*Sandbox, error) {
	switch c.Mode {
	case Namespace, Chroot, None:
	default:
		return nil, fmt.Errorf("sandbox: want namespace, chroot or none, got %q", c.Mode)
	}
	if c.Mode != None {
		if c.SharedDir == "" {
			return nil, fmt.Errorf("sandbox %s: no shared directory", c.Mode)
		}
		abs, err := filepath.Abs(c.SharedDir)
		if err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", c.Mode, err)
		}
		c.SharedDir = abs
		if fi, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("sandbox %s: shared directory: %w", c.Mode, err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("sandbox %s: shared directory %s is not a directory", c.Mode, abs)
		}
	}
	if c.Args == nil {
		c.Args = os.Args
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	log := c.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	s := &Sandbox{cfg: c, log: log, child: os.Getenv(childEnv) != ""}
	if s.child {
		if c.Mode != Namespace {
			return nil, fmt.Errorf("sandbox: %s set but the mode is %s", childEnv, c.Mode)
		}
		if os.Getpid() != 1 {
			return nil, fmt.Errorf("sandbox: %s set outside a new pid namespace", childEnv)
		}
	}
	return s, nil
}

// Child reports whether this process is namespace mode's re-executed
// child. The child must not touch host paths, even when Enter fails: the
// parent owns the socket path and removes it.
func (s *Sandbox) Child() bool { return s.child }

// Listener returns the vhost-user listener: in namespace mode's child the
// one the parent opened and passed down, otherwise what open returns.
// The socket path is thus resolved once, on the host, by the parent.
func (s *Sandbox) Listener(open func() (*net.UnixListener, error)) (*net.UnixListener, error) {
	if !s.child {
		return open()
	}
	l, err := vhostuser.ListenerFromFD(inheritedFD)
	if err != nil {
		return nil, fmt.Errorf("sandbox: the listener the parent passed down: %w", err)
	}
	return l, nil
}

// Enter confines the process. Call it after everything outside the share
// is open (the listener l, log destinations) and before the filesystem is
// made, and build the filesystem on Result.SharedDir.
//
// In namespace mode the first call re-executes the program in new
// namespaces, forwards SIGTERM, SIGINT, SIGHUP and SIGQUIT to it (and
// SIGTERM when ctx ends), waits for it and returns Exited with its exit
// code; the child's own call sets up and pivots into the new root. In
// chroot mode the process chroots into the share. The listener is set not
// to unlink its path when closed, since that path would then name a file
// in the share.
func (s *Sandbox) Enter(ctx context.Context, l *net.UnixListener) (Result, error) {
	switch {
	case s.cfg.Mode == None:
		return Result{SharedDir: s.cfg.SharedDir}, nil
	case s.cfg.Mode == Chroot:
		if l != nil {
			l.SetUnlinkOnClose(false)
		}
		proc, err := openProcSelfFD()
		if err != nil {
			return Result{}, fmt.Errorf("sandbox chroot: %w", err)
		}
		conf, err := startConfiner(nil)
		if err != nil {
			proc.Close()
			return Result{}, fmt.Errorf("sandbox chroot: %w", err)
		}
		if err := enterChroot(s.cfg.SharedDir); err != nil {
			proc.Close()
			conf.Close()
			return Result{}, err
		}
		s.log.Infof("sandbox: chrooted into %s", s.cfg.SharedDir)
		return Result{SharedDir: "/", Confined: true, ProcSelfFD: proc, Confiner: conf}, nil
	case s.child:
		proc, conf, err := enterNamespaceRoot(s.cfg.SharedDir, s.log)
		if err != nil {
			return Result{}, err
		}
		s.log.Infof("sandbox: pid 1 of new namespaces, root is %s", s.cfg.SharedDir)
		return Result{SharedDir: "/", Confined: true, ProcSelfFD: proc, Confiner: conf}, nil
	default:
		if l == nil {
			return Result{}, fmt.Errorf("sandbox namespace: no listener to pass to the child")
		}
		code, err := s.runChild(ctx, l)
		if err != nil {
			return Result{}, err
		}
		return Result{Exited: true, ExitCode: code, SharedDir: s.cfg.SharedDir}, nil
	}
}

// openProcSelfFD opens /proc/self/fd as an O_PATH directory.
func openProcSelfFD() (*os.File, error) {
	fd, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /proc/self/fd: %w", err)
	}
	return os.NewFile(uintptr(fd), "/proc/self/fd"), nil
}

// hint is the advice given when the kernel refuses a namespace sandbox.
const hint = "run as root outside a container, or use --sandbox=chroot or --sandbox=none"
