package passthrough

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// credSwitcher runs create-type operations with the caller's fsuid and fsgid,
// as virtiofsd does, so that the host kernel makes the new inode's owner and
// group (setgid directories included) and checks the permissions itself.
//
// setfsuid/setfsgid (and raw setgroups) act on the calling thread only; the
// goroutine is locked to its OS thread for the duration and the previous
// identity restored before unlocking. If restoring fails the goroutine stays
// locked so that the Go runtime discards the thread when it exits.
type credSwitcher struct {
	enabled bool
	groups  []uint32 // the daemon's supplementary groups, dropped while switched
}

func newCredSwitcher() *credSwitcher {
	c := &credSwitcher{enabled: os.Geteuid() == 0}
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

// as runs f with the caller's fsuid/fsgid and no supplementary groups (the
// daemon's own groups must not leak into the caller's rights: CVE-2022-0358).
func (c *credSwitcher) as(caller fuse.Caller, f func() error) error {
	if !c.enabled || (caller.Uid == 0 && caller.Gid == 0) {
		return f()
	}
	runtime.LockOSThread()
	restored := false
	defer func() {
		if restored {
			runtime.UnlockOSThread()
		}
	}()
	if len(c.groups) > 0 {
		if err := setgroupsThread(nil); err != nil {
			restored = true
			return fmt.Errorf("setgroups: %w", err)
		}
	}
	oldGid, _ := unix.SetfsgidRetGid(int(caller.Gid))
	oldUid, _ := unix.SetfsuidRetUid(int(caller.Uid))
	var err error
	if fsuid() != int(caller.Uid) || fsgid() != int(caller.Gid) {
		err = syscall.EPERM
	} else {
		err = f()
	}
	unix.SetfsuidRetUid(oldUid)
	unix.SetfsgidRetGid(oldGid)
	restored = fsuid() == oldUid && fsgid() == oldGid
	if len(c.groups) > 0 && setgroupsThread(c.groups) != nil {
		restored = false
	}
	return err
}
