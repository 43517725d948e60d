package vhostuser

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Listen listens on a unix socket at path (relative paths are relative to
// the working directory). A stale socket file left by an earlier run is
// removed first; any other kind of file there is an error. The socket is
// created with mode 0600: the process umask is tightened around bind, as
// virtiofsd does, and the mode is set again afterwards.
func Listen(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listen %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	old := unix.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// ListenGroup is Listen for a VMM that runs as another user: the socket's
// group is set to gid and the group may connect (mode 0660), as
// virtiofsd's --socket-group does. The group is set before the mode
// grants it anything, so no other group is ever let in.
func ListenGroup(path string, gid int) (*net.UnixListener, error) {
	l, err := Listen(path)
	if err != nil {
		return nil, err
	}
	if err := os.Lchown(path, -1, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket group: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// ListenerFromFD serves an already-listening unix socket inherited as fd
// (virtiofsd's --fd=N). The fd is taken over: the returned listener owns it.
func ListenerFromFD(fd int) (*net.UnixListener, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("fd %d is not a socket: %w", fd, err)
	}
	if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("fd %d is not a stream socket", fd)
	}
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc == 0 {
		return nil, fmt.Errorf("fd %d is not a listening socket", fd)
	}
	f := os.NewFile(uintptr(fd), "vhost-user listener")
	fl, err := net.FileListener(f) // dups the fd
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("fd %d: %w", fd, err)
	}
	ul, ok := fl.(*net.UnixListener)
	if !ok {
		fl.Close()
		return nil, fmt.Errorf("fd %d is not a unix socket", fd)
	}
	return ul, nil
}
