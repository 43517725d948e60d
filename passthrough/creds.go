package passthrough

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// credSwitcher runs create-type operations on "creator" threads: OS threads
// that unshared CLONE_FS and set their own umask to 0 once, and that take
// the caller's fsuid and fsgid around each operation, as virtiofsd does. So
// the host kernel makes the new inode's owner and group (setgid directories
// included), checks the permissions itself, and gives the inode exactly the
// mode the guest sent (the guest kernel applied the caller's umask). Nothing
// is chmod'ed after creation: looking the new name up again to fix its mode
// would let a concurrent RENAME_EXCHANGE put another inode there, which the
// daemon would then chmod with its own rights. The process umask stays as
// the operator set it for the daemon's own files and sockets.
//
// setfsuid/setfsgid (and raw setgroups) act on the calling thread only. A
// creator goroutine stays locked to its thread for life; if restoring the
// daemon's identity fails it exits still locked, so that the Go runtime
// discards the thread. Threads start on demand, up to maxCreators, and stop
// at close.
type credSwitcher struct {
	enabled bool
	groups  []uint32 // the daemon's supplementary groups, dropped while switched

	jobs chan *credJob
	quit chan struct{} // closed by close
	mu   sync.Mutex
	live int  // creator threads running
	shut bool // close called: no new threads
	wg   sync.WaitGroup
}

// maxCreators bounds the creator threads of one filesystem: creations are
// short blocking syscalls, a few threads keep them concurrent.
const maxCreators = 4

type credJob struct {
	caller fuse.Caller
	f      func() error
	done   chan error
}

var credJobs = sync.Pool{New: func() any { return &credJob{done: make(chan error, 1)} }}

func newCredSwitcher() *credSwitcher {
	c := &credSwitcher{enabled: os.Geteuid() == 0, jobs: make(chan *credJob), quit: make(chan struct{})}
	if gs, err := unix.Getgroups(); err == nil {
		for _, g := range gs {
			c.groups = append(c.groups, uint32(g))
		}
	}
	return c
}

func setgroupsThread(gs []uint32) error {
	var p unsafe.Pointer
	if len(gs) > 0 {
		p = unsafe.Pointer(&gs[0])
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gs)), uintptr(p), 0)
	if e != 0 {
		return e
	}
	return nil
}

func fsuid() int { prev, _ := unix.SetfsuidRetUid(-1); return prev }
func fsgid() int { prev, _ := unix.SetfsgidRetGid(-1); return prev }

// as runs f on a creator thread (umask 0) with the caller's fsuid/fsgid and
// no supplementary groups (the daemon's own groups must not leak into the
// caller's rights: CVE-2022-0358).
func (c *credSwitcher) as(caller fuse.Caller, f func() error) error {
	j := credJobs.Get().(*credJob)
	j.caller, j.f = caller, f
	select {
	case c.jobs <- j:
	default:
		err := c.spawn()
		if err == nil {
			select {
			case c.jobs <- j:
			case <-c.quit:
				err = syscall.ESHUTDOWN
			}
		}
		if err != nil {
			j.f = nil
			credJobs.Put(j)
			return err
		}
	}
	err := <-j.done
	j.f = nil
	credJobs.Put(j)
	return err
}

// spawn starts one more creator thread unless maxCreators run (then the
// caller waits for one of them).
func (c *credSwitcher) spawn() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shut {
		return syscall.ESHUTDOWN
	}
	if c.live >= maxCreators {
		return nil
	}
	ready := make(chan error, 1)
	c.live++
	c.wg.Add(1)
	go c.creator(ready)
	if err := <-ready; err != nil {
		return err
	}
	return nil
}

// creator is the body of a creator thread.
func (c *credSwitcher) creator(ready chan<- error) {
	defer c.wg.Done()
	defer func() {
		c.mu.Lock()
		c.live--
		c.mu.Unlock()
	}()
	runtime.LockOSThread() // never unlocked: the thread's fs state is its own
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		ready <- fmt.Errorf("creator thread: unshare(CLONE_FS): %w", err)
		return
	}
	unix.Umask(0)
	ready <- nil
	for {
		select {
		case <-c.quit:
			return
		case j := <-c.jobs:
			err, ok := c.run(j.caller, j.f)
			j.done <- err
			if !ok {
				return // identity not restored: let the runtime drop the thread
			}
		}
	}
}

// run switches to the caller, runs f and switches back; ok is false when
// the daemon's identity could not be restored on this thread.
func (c *credSwitcher) run(caller fuse.Caller, f func() error) (err error, ok bool) {
	if !c.enabled || (caller.Uid == 0 && caller.Gid == 0) {
		return f(), true
	}
	if len(c.groups) > 0 {
		if err := setgroupsThread(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err), true
		}
	}
	oldGid, _ := unix.SetfsgidRetGid(int(caller.Gid))
	oldUid, _ := unix.SetfsuidRetUid(int(caller.Uid))
	if fsuid() != int(caller.Uid) || fsgid() != int(caller.Gid) {
		err = syscall.EPERM
	} else {
		err = f()
	}
	unix.SetfsuidRetUid(oldUid)
	unix.SetfsgidRetGid(oldGid)
	ok = fsuid() == oldUid && fsgid() == oldGid
	if len(c.groups) > 0 && setgroupsThread(c.groups) != nil {
		ok = false
	}
	return err, ok
}

// close stops the creator threads (they exit locked, so the runtime ends
// the threads with their private fs state).
func (c *credSwitcher) close() {
	c.mu.Lock()
	if c.shut {
		c.mu.Unlock()
		return
	}
	c.shut = true
	c.mu.Unlock()
	close(c.quit)
	c.wg.Wait()
}
