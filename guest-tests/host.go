package guesttests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/sirupsen/logrus"
)

// hostPackages are the Debian packages the guest runs need on the host:
// QEMU, the C virtiofsd and xz (the kernel payload is xz with the x86 BCJ
// filter).
func hostPackages() []string { return []string{"qemu-system-x86", "qemu-system-common", "xz-utils"} }

// EnsureHost makes sure the host can run guests: root (the backends and the
// test trees need it) and QEMU plus the C virtiofsd, installed with apt-get
// when missing. The error says why guests cannot run (tests skip on it).
func EnsureHost(ctx context.Context, log logrus.FieldLogger) error {
	if os.Geteuid() != 0 {
		return errors.New("guest tests need root (vhost-user backends, chown'ed test trees)")
	}
	_, qerr := exec.LookPath(QEMU)
	_, verr := os.Stat(CVirtiofsdPath)
	_, xerr := exec.LookPath("xz")
	if qerr == nil && verr == nil && xerr == nil {
		return nil
	}
	if log == nil {
		log = logrus.StandardLogger()
	}
	log.Infof("guest-tests: installing %v", hostPackages())
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-q", "--no-install-recommends"}, hostPackages()...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w\n%s", err, lastLines(string(out), 5))
		}
		return nil
	}
	if err := install(); err != nil {
		// a fresh machine may have no package lists yet
		if uerr := aptUpdate(ctx); uerr != nil {
			return fmt.Errorf("cannot install QEMU: %w (apt-get update: %v)", err, uerr)
		}
		if err := install(); err != nil {
			return fmt.Errorf("cannot install QEMU: %w", err)
		}
	}
	if _, err := exec.LookPath(QEMU); err != nil {
		return fmt.Errorf("%s still missing after apt-get install: %w", QEMU, err)
	}
	return nil
}

func aptUpdate(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "apt-get", "update", "-q").CombinedOutput()
	if err != nil {
		return fmt.Errorf("apt-get update: %w\n%s", err, lastLines(string(out), 5))
	}
	return nil
}
