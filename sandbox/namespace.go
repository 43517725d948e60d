package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// cloneFlags are the namespaces the child starts in.
const cloneFlags = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWIPC

// forwarded are the signals the parent passes on to the child.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT}

// runChild re-executes the program in new namespaces with l as fd 3, and
// supervises it until it exits. It returns the child's exit code (128+N
// when signal N ended it).
func (s *Sandbox) runChild(ctx context.Context, l *net.UnixListener) (int, error) {
	// The path stays the parent's to remove; the child never sees it.
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	if err != nil {
		return 0, fmt.Errorf("sandbox namespace: listener fd: %w", err)
	}
	defer lf.Close()
	l.Close()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       s.cfg.Args,
		Env:        append(os.Environ(), childEnv+"="+strconv.Itoa(inheritedFD)),
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: []*os.File{lf},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: cloneFlags,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	// Pdeathsig fires when the forking thread exits: start and wait on one
	// locked thread so the child dies with the parent and not before.
	type outcome struct {
		code int
		err  error
	}
	started := make(chan error, 1)
	done := make(chan outcome, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		done <- outcome{exitCode(cmd.ProcessState), err}
	}()
	if err := <-started; err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EUSERS) {
			return 0, fmt.Errorf("sandbox namespace: cannot create mount, pid and net namespaces (%w): %s", err, hint)
		}
		return 0, fmt.Errorf("sandbox namespace: start child: %w", err)
	}
	s.log.Debugf("sandbox: child %d runs in new namespaces", cmd.Process.Pid)
	lf.Close()

	// Only the first stop request is passed on (SIGTERM usually arrives
	// both as a signal and as ctx ending): a second one could reach the
	// child after it stopped listening for it and kill it with a non-zero
	// status. A child that does not stop in time is killed.
	var kill <-chan time.Time
	stopping := false
	stop := func(sig os.Signal) {
		isStop := sig == syscall.SIGTERM || sig == syscall.SIGINT
		if isStop && stopping {
			return
		}
		if err := cmd.Process.Signal(sig); err != nil {
			s.log.WithError(err).Debugf("sandbox: forward %v", sig)
		}
		if isStop {
			stopping = true
			kill = time.After(s.cfg.StopTimeout)
		}
	}
	ctxDone := ctx.Done()
	for {
		select {
		case o := <-done:
			var ee *exec.ExitError
			if o.err != nil && !errors.As(o.err, &ee) {
				return 0, fmt.Errorf("sandbox namespace: wait for child: %w", o.err)
			}
			return o.code, nil
		case sig := <-sigs:
			stop(sig)
		case <-ctxDone:
			ctxDone = nil
			stop(syscall.SIGTERM)
		case <-kill:
			s.log.Warnf("sandbox: child still running %v after a stop signal; killing it", s.cfg.StopTimeout)
			cmd.Process.Kill()
			kill = nil
		}
	}
}

// exitCode is the shell's view of how a process ended.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// enterNamespaceRoot runs in the child, already in its own mount, pid and
// net namespaces (so every thread sees the mounts below), and makes the
// shared directory the root, as virtiofsd does: a recursive copy of the
// share (a slave of the host's mounts, so host submounts still arrive)
// becomes "/" and the host's tree is detached. procfs stays reachable only
// through the returned O_PATH fd of /proc/self/fd, opened before the
// pivot; nothing of it is in the new root, so the guest sees nothing but
// the share.
func enterNamespaceRoot(shared string, log logrus.FieldLogger) (*os.File, *Confiner, error) {
	wrap := func(what string, err error) error {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("sandbox namespace (%s): %s: %w: %s", shared, what, err, hint)
		}
		return fmt.Errorf("sandbox namespace (%s): %s: %w", shared, what, err)
	}
	// Our mount events stay here; the host's still reach us.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return nil, nil, wrap("make mounts slave", err)
	}
	// A detached recursive copy of the share, taken before anything is
	// mounted over its path (a bind made later would copy that too). Like a
	// bind, the copy of a slave is a slave of the same master.
	tree, err := unix.OpenTree(unix.AT_FDCWD, shared, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return nil, nil, wrap("clone the shared directory's mount tree", err)
	}
	defer unix.Close(tree)

	// A procfs of the new pid namespace; some containers refuse it (masked
	// /proc), and then the inherited one, whose "self" is still us, serves.
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("proc", "/proc", "proc", flags, ""); err != nil {
		log.WithError(err).Debug("sandbox: no fresh procfs; using the inherited /proc")
	}
	// "self" is resolved now, to this process, whose fd table all its
	// threads share; the fd keeps the procfs mount alive once detached.
	proc, err := openProcSelfFD()
	if err != nil {
		return nil, nil, wrap("procfs", err)
	}
	// The thread capabilities are later dropped from keeps a copy of this
	// root, procfs included (see Confiner).
	conf, err := startConfiner(cloneRootWithProc)
	if err != nil {
		proc.Close()
		return nil, nil, wrap("confiner thread", err)
	}
	fail := func(what string, err error) (*os.File, *Confiner, error) {
		proc.Close()
		conf.Close()
		return nil, nil, wrap(what, err)
	}

	// The share's copy is attached over /proc, which exists, is ours (the
	// fresh procfs) and, unlike the share's path, works when the share is
	// "/" too; chdir into it lands on the copy, the topmost mount there.
	const at = "/proc"
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, at, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fail("attach the shared directory's copy", err)
	}
	if err := unix.Chdir(at); err != nil {
		return fail("chdir into the shared directory's copy", err)
	}
	// pivot_root(".", ".") stacks the old root on the new one; detaching
	// "." then drops the whole host tree (and the procfs) from this
	// namespace.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fail("pivot_root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fail("detach old root", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fail("chdir /", err)
	}
	return proc, conf, nil
}
