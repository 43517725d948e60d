package main

import (
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/sandbox"
)

// securityConfig holds virtiofsd's --modcaps, --seccomp and --xattrmap.
type securityConfig struct {
	ModCaps  string // +cap/-cap list, ':'-separated
	Seccomp  string // kill (default), log, trap, none
	XattrMap string // virtiofsd xattr mapping rules; "" picks the mode's default
}

func setModcaps(c *daemonConfig, v string) error {
	if _, err := sandbox.KeptCaps(sandbox.Confinement{ModCaps: v}); err != nil {
		return err
	}
	c.Security.ModCaps = v
	return nil
}

func setSeccomp(c *daemonConfig, v string) error {
	switch v {
	case sandbox.SeccompKill, sandbox.SeccompLog, sandbox.SeccompTrap, sandbox.SeccompNone:
		c.Security.Seccomp = v
		return nil
	}
	return fmt.Errorf("--seccomp=%q: want kill, log, trap or none", v)
}

func setXattrmap(c *daemonConfig, v string) error {
	if _, err := passthrough.ParseXattrMap(v); err != nil {
		return err
	}
	c.Security.XattrMap = v
	return nil
}

// xattrMap is the mapping passthrough shares use: --xattrmap when given;
// else, with nydusd's command line (Kata's guest builds container rootfs
// overlays whose upper directories are on our share), the guest's trusted.*
// stored as user.virtiofs.trusted.* on the host; else passthrough's default,
// which refuses trusted.* from the guest.
func (c *daemonConfig) xattrMap() *passthrough.XattrMap {
	rules := c.Security.XattrMap
	if rules == "" && c.Nydusd {
		rules = passthrough.TrustedToUserXattrMap
	}
	if rules == "" {
		return nil
	}
	m, _ := passthrough.ParseXattrMap(rules) // checked when parsed
	return m
}

// confine drops capabilities, sets no_new_privs and installs the seccomp
// filter on the serving process (see sandbox.Confine and docs/security.md).
func confine(c *daemonConfig, on *sandbox.Confiner, log *logrus.Entry) error {
	conf := sandbox.Confinement{
		ModCaps:     c.Security.ModCaps,
		FileHandles: c.InodeFileHandles != passthrough.HandlesNever,
		Seccomp:     c.Security.Seccomp,
		Network:     c.Nydusd || c.ConfigFile != "" || c.Syslog, // syslog may reconnect
	}
	if err := sandbox.Confine(conf, on); err != nil {
		return fmt.Errorf("confine the daemon: %w", err)
	}
	caps, _ := sandbox.KeptCaps(conf)
	log.WithFields(logrus.Fields{"seccomp": conf.Seccomp, "caps": fmt.Sprint(caps), "euid": os.Geteuid()}).Debug("confined")
	return nil
}
