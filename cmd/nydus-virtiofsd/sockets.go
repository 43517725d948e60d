package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A socket path is claimed before the daemon listens on it, so that a
// second instance never takes over the socket of a live one (which would
// leave the first running and unreachable):
//
//   - a lock is taken on PATH.pid (flock, as the Rust virtiofsd does, so
//     it also sees a Rust virtiofsd on the same path) and the pid written
//     into it; a held lock means a live daemon;
//   - a socket file at PATH that some process listens on (in
//     /proc/net/unix) is refused as well: another kind of daemon serves it.
//     The vhost-user socket is not probed by connecting, since a daemon
//     waiting for its VMM would take the probe for its frontend;
//   - only then is a leftover socket file removed.

// socketClaim is a claimed socket path; release drops the claim.
type socketClaim struct {
	path, pidPath string
	lock          *os.File
}

// socketDirError says that a socket's directory is missing, once, with
// the path.
func socketDirError(flag, path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s: directory %s does not exist", flag, path, dir)
	case err != nil:
		return fmt.Errorf("%s %s: %w", flag, path, err)
	case !fi.IsDir():
		return fmt.Errorf("%s %s: %s is not a directory", flag, path, dir)
	}
	return nil
}

// claimSocket claims path (named by flag in messages) for this process.
func claimSocket(flag, path string) (*socketClaim, error) {
	if err := socketDirError(flag, path); err != nil {
		return nil, err
	}
	c := &socketClaim{path: path, pidPath: path + ".pid"}
	lock, err := lockPIDFile(c.pidPath)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	c.lock = lock
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return c, nil
	case err != nil:
		c.release()
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	case fi.Mode().Type() != fs.ModeSocket:
		c.release()
		return nil, fmt.Errorf("%s %s: exists and is not a socket; not removing it", flag, path)
	case listening(path):
		c.release()
		return nil, fmt.Errorf("%s %s: another daemon is listening on this socket; stop it first "+
			"(only a stale socket file is removed)", flag, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.release()
		return nil, fmt.Errorf("%s %s: remove the stale socket: %w", flag, path, err)
	}
	return c, nil
}

// release removes the pid file and drops the lock. The socket file itself
// is removed by whoever listened on it.
func (c *socketClaim) release() {
	if c == nil || c.lock == nil {
		return
	}
	if c.pidPath != "" {
		os.Remove(c.pidPath) // still locked: nobody else can hold it
	}
	c.lock.Close()
	c.lock = nil
}

// forget keeps the lock but leaves the pid file in place at release: for
// a process confined to the share, where the path names another file.
func (c *socketClaim) forget() {
	if c != nil {
		c.pidPath = ""
	}
}

// lockPIDFile opens (creating) name, takes an exclusive flock on it
// without waiting and writes this process's pid into it. When the lock is
// held, the error names the pid recorded in the file.
func lockPIDFile(name string) (*os.File, error) {
	for range 10 {
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("pid file: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			b := make([]byte, 32)
			n, _ := f.ReadAt(b, 0)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				holder := strings.TrimSpace(string(b[:n]))
				if holder == "" {
					holder = "unknown"
				}
				return nil, fmt.Errorf("in use by another daemon (pid %s holds the lock on %s); stop it first", holder, name)
			}
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		// The holder before us may have removed the file between our open
		// and our lock: then we locked a file nobody else sees. Retry.
		var held, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) != nil || unix.Stat(name, &now) != nil || held.Ino != now.Ino || held.Dev != now.Dev {
			f.Close()
			continue
		}
		if err := f.Truncate(0); err == nil {
			_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		}
		return f, nil
	}
	return nil, fmt.Errorf("lock %s: the file keeps being replaced", name)
}

// listening reports whether a unix socket bound to path is listening in
// this network namespace (/proc/net/unix: flag __SO_ACCEPTCON, 0x10000).
func listening(path string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		p := strings.Join(fields[7:], " ")
		if p != path && p != abs {
			continue
		}
		if flags, err := strconv.ParseUint(fields[3], 16, 32); err == nil && flags&0x10000 != 0 {
			return true
		}
	}
	return false
}
