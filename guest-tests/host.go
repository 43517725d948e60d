package guesttests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/sirupsen/logrus"
)

// hostPackages are the Debian packages the guest runs need on the host.
func hostPackages() []string { return []string{"qemu-system-x86", "qemu-system-common"} }

// EnsureHost makes sure the host can run guests: root (the backends and the
// test trees need it) and QEMU plus the C virtiofsd, installed with apt-get
// when missing. The error says why guests cannot run (tests skip on it).
func EnsureHost(ctx context.Context, log logrus.FieldLogger) error {
	if os.Geteuid() != 0 {
		return errors.New("guest tests need root (vhost-user backends, chown'ed test trees)")
	}
	_, qerr := exec.LookPath(QEMU)
	_, verr := os.Stat(CVirtiofsdPath)
	if qerr == nil && verr == nil {
		return nil
	}
	if log == nil {
		log = logrus.StandardLogger()
	}
	log.Infof("guest-tests: installing %v", hostPackages())
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-q", "--no-install-recommends"}, hostPackages()...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cannot install QEMU: %w\n%s", err, lastLines(string(out), 5))
	}
	if _, err := exec.LookPath(QEMU); err != nil {
		return fmt.Errorf("%s still missing after apt-get install: %w", QEMU, err)
	}
	return nil
}
