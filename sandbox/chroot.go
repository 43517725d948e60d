package sandbox

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// enterChroot makes shared the root of the whole process. Go creates its
// threads with CLONE_FS, so they all share one root and working directory
// and chroot acts on every one of them (nothing in the daemon unshares
// CLONE_FS). chdir first and chroot(".") so the path is resolved once.
func enterChroot(shared string) error {
	if err := unix.Chdir(shared); err != nil {
		return fmt.Errorf("sandbox chroot: chdir %s: %w", shared, err)
	}
	if err := unix.Chroot("."); err != nil {
		if errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("sandbox chroot: %s: %w (needs CAP_SYS_CHROOT; use --sandbox=none)", shared, err)
		}
		return fmt.Errorf("sandbox chroot: %s: %w", shared, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("sandbox chroot: chdir /: %w", err)
	}
	return nil
}
