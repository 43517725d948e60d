package passthrough

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// RaiseNofileLimit raises the soft RLIMIT_NOFILE to the hard limit and
// returns the new soft limit. The daemon calls it at start.
func RaiseNofileLimit() (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("setrlimit(RLIMIT_NOFILE, %d): %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}
