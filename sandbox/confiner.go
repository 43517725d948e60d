package sandbox

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// Confiner is an OS thread kept aside, with an fs_struct of its own, from
// which Confine drops capabilities once the process root is the share.
//
// Capabilities are per thread. libcap's cap package changes them on every
// thread of the process (its psx package: in a cgo binary, which ours is
// because of net, it signals each thread it finds in /proc/PID/task). The
// confined root has no /proc, so the broadcast runs on this thread, whose
// root still has one: in chroot mode the host's root (chroot(2) moves only
// the shared fs_struct); in namespace mode a private recursive copy of the
// pre-pivot root, taken once the new pid namespace's procfs is mounted
// (a root other than the old one, so pivot_root leaves it alone). The
// thread never serves requests and is discarded after Confine.
type Confiner struct {
	jobs chan func()
	done chan struct{}
}

// startConfiner starts the thread; prepare runs on it after unshare(CLONE_FS).
func startConfiner(prepare func() error) (*Confiner, error) {
	c := &Confiner{jobs: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the runtime drops the thread at exit
		defer close(c.done)
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			ready <- fmt.Errorf("confiner thread: unshare(CLONE_FS): %w", err)
			return
		}
		if prepare != nil {
			if err := prepare(); err != nil {
				ready <- err
				return
			}
		}
		ready <- nil
		for f := range c.jobs {
			f()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return c, nil
}

// run runs f on the confiner thread (or here, for a nil Confiner).
func (c *Confiner) run(f func() error) error {
	if c == nil {
		return f()
	}
	var err error
	done := make(chan struct{})
	c.jobs <- func() { err = f(); close(done) }
	<-done
	return err
}

// Close ends the thread.
func (c *Confiner) Close() {
	if c == nil {
		return
	}
	select {
	case <-c.done:
	default:
		close(c.jobs)
		<-c.done
	}
}

// procTasksVisible checks that this thread sees this process's threads at
// /proc/PID/task, where libcap's psx looks for them (a procfs of another
// pid namespace would list other threads, and psx would wait for them).
func procTasksVisible() error {
	p := "/proc/" + strconv.Itoa(os.Getpid()) + "/task/" + strconv.Itoa(unix.Gettid())
	if _, err := os.Stat(p); err != nil {
		return fmt.Errorf("capabilities: this process's threads are not visible in /proc (%w); a procfs of its pid namespace is needed to drop them on every thread", err)
	}
	return nil
}

// cloneRootWithProc makes the calling thread's root a private recursive
// copy of the current root (with the procfs mounted on /proc).
func cloneRootWithProc() error {
	t, err := unix.OpenTree(unix.AT_FDCWD, "/", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("confiner thread: clone the root: %w", err)
	}
	defer unix.Close(t)
	if err := unix.Fchdir(t); err != nil {
		return fmt.Errorf("confiner thread: fchdir: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("confiner thread: chroot: %w", err)
	}
	return unix.Chdir("/")
}
