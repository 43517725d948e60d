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

// SetNofileLimit sets both RLIMIT_NOFILE limits to n (virtiofsd's
// --rlimit-nofile: a management tool dividing the system's file limit
// between daemons). Raising the hard limit needs CAP_SYS_RESOURCE, and n
// cannot exceed fs.nr_open.
func SetNofileLimit(n uint64) error {
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: n}); err != nil {
		return fmt.Errorf("setrlimit(RLIMIT_NOFILE, %d): %w", n, err)
	}
	return nil
}
