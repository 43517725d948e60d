package sandbox

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
	"kernel.org/pub/linux/libs/security/libcap/psx"
)

// Seccomp actions for a system call outside the allow-list, as virtiofsd's
// --seccomp.
const (
	SeccompKill = "kill" // the process dies (the default)
	SeccompLog  = "log"  // allowed, and logged by the kernel (audit)
	SeccompTrap = "trap" // SIGSYS (the Go runtime then dies with a trace)
	SeccompNone = "none" // no filter
)

// Confinement is what Confine applies to the serving process.
type Confinement struct {
	// ModCaps changes the kept capabilities, virtiofsd's --modcaps syntax:
	// "+name" adds, "-name" removes, separated by ':' (e.g.
	// "+sys_admin:-mknod"); names with or without "cap_", any case.
	ModCaps string
	// FileHandles keeps CAP_DAC_READ_SEARCH, which open_by_handle_at needs.
	FileHandles bool
	// Seccomp is one of kill (""), log, trap, none.
	Seccomp string
	// Network allows making sockets and connecting (nydusd mode: registry
	// and object-storage backends, the API socket). Without it the
	// process may only use sockets it already has.
	Network bool
}

// baseCaps are the capabilities a passthrough daemon needs, as virtiofsd
// keeps them: make nodes and change owners, modes and times as the guest
// asks (CHOWN, FOWNER, FSETID, MKNOD, SETFCAP for security.capability),
// bypass permission checks the guest kernel made (DAC_OVERRIDE), and
// switch fsuid/fsgid and groups for creations (SETUID, SETGID).
var baseCaps = []cap.Value{cap.CHOWN, cap.DAC_OVERRIDE, cap.FOWNER, cap.FSETID, cap.SETGID, cap.SETUID, cap.MKNOD, cap.SETFCAP}

// KeptCaps returns the capabilities Confine keeps for c.
func KeptCaps(c Confinement) ([]cap.Value, error) {
	keep := map[cap.Value]bool{}
	for _, v := range baseCaps {
		keep[v] = true
	}
	if c.FileHandles {
		keep[cap.DAC_READ_SEARCH] = true
	}
	for _, item := range strings.Split(c.ModCaps, ":") {
		if item == "" {
			continue
		}
		if item[0] != '+' && item[0] != '-' {
			return nil, fmt.Errorf("--modcaps: %q: want +name or -name", item)
		}
		name := strings.ToLower(item[1:])
		if !strings.HasPrefix(name, "cap_") {
			name = "cap_" + name
		}
		v, err := cap.FromName(name)
		if err != nil {
			return nil, fmt.Errorf("--modcaps: unknown capability %q", item[1:])
		}
		keep[v] = item[0] == '+'
	}
	var out []cap.Value
	for v := cap.Value(0); v < cap.MaxBits(); v++ {
		if keep[v] {
			out = append(out, v)
		}
	}
	return out, nil
}

// Confine drops every capability but those KeptCaps returns (effective,
// permitted, inheritable, ambient and bounding sets, on every thread),
// sets no_new_privs and installs the seccomp allow-list on every thread.
// Call it once everything the daemon needs beyond serving is done (the
// sandbox entered, the filesystem opened), right before serving.
//
// on is the sandbox's Result.Confiner (nil in mode none): the thread the
// capability changes are made from. Confine closes it.
func Confine(c Confinement, on *Confiner) error {
	defer on.Close()
	var filter *seccomp.Filter
	switch c.Seccomp {
	case "", SeccompKill, SeccompLog, SeccompTrap, SeccompNone:
	default:
		return fmt.Errorf("--seccomp=%q: want kill, log, trap or none", c.Seccomp)
	}
	if c.Seccomp != SeccompNone {
		f, err := seccompFilter(c)
		if err != nil {
			return err
		}
		filter = &f
	}
	keep, err := KeptCaps(c)
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 { // an unprivileged daemon has none to drop
		err := on.run(func() error {
			if err := procTasksVisible(); err != nil {
				return err
			}
			return dropCaps(keep)
		})
		if err != nil {
			return err
		}
	}
	if err := on.run(setNoNewPrivs); err != nil {
		return err
	}
	if filter == nil {
		return nil
	}
	// One thread loads the filter (LoadFilter makes two calls), TSYNC puts
	// it on every other.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := seccomp.LoadFilter(*filter); err != nil {
		return fmt.Errorf("seccomp: load filter: %w", err)
	}
	return nil
}

// dropCaps keeps exactly keep. libcap's cap package applies each change
// to every OS thread of the process (its psx package), which a Go
// program needs: capabilities are per thread, and the runtime has made
// several threads by now.
//
// A daemon started with fewer capabilities (a container) keeps what it has
// of keep, and leaves the bounding set alone without CAP_SETPCAP.
func dropCaps(keep []cap.Value) error {
	cur := cap.GetProc()
	kept := map[cap.Value]bool{}
	var have []cap.Value
	for _, v := range keep {
		if on, err := cur.GetFlag(cap.Permitted, v); err == nil && on {
			kept[v] = true
			have = append(have, v)
		}
	}
	keep = have
	setpcap, _ := cur.GetFlag(cap.Effective, cap.SETPCAP)
	var drop []cap.Value
	for v := cap.Value(0); v < cap.MaxBits(); v++ {
		if !kept[v] {
			drop = append(drop, v)
		}
	}
	if err := cap.ResetAmbient(); err != nil {
		return fmt.Errorf("capabilities: clear ambient set: %w", err)
	}
	// The bounding set first: dropping from it needs CAP_SETPCAP, which
	// goes next.
	if setpcap {
		if err := cap.DropBound(drop...); err != nil {
			return fmt.Errorf("capabilities: drop bounding set: %w", err)
		}
	}
	set := cap.NewSet()
	if err := set.SetFlag(cap.Permitted, true, keep...); err != nil {
		return err
	}
	if err := set.SetFlag(cap.Effective, true, keep...); err != nil {
		return err
	}
	if err := set.SetProc(); err != nil {
		return fmt.Errorf("capabilities: keep %v: %w", keep, err)
	}
	return nil
}

// seccompFilter builds the allow-list for this architecture.
func seccompFilter(c Confinement) (seccomp.Filter, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return seccomp.Filter{}, fmt.Errorf("seccomp: %w", err)
	}
	var names []string
	for _, group := range [][]string{runtimeSyscalls, fileSyscalls, serveSyscalls} {
		names = append(names, group...)
	}
	if c.Network {
		names = append(names, networkSyscalls...)
	}
	// Only names this architecture has (several are amd64-only legacy).
	var allowed []string
	for _, n := range names {
		if _, ok := info.SyscallNames[n]; ok {
			allowed = append(allowed, n)
		}
	}
	def := seccomp.ActionKillProcess
	switch c.Seccomp {
	case SeccompLog:
		def = seccomp.ActionLog
	case SeccompTrap:
		def = seccomp.ActionTrap
	}
	f := seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync,
		Policy: seccomp.Policy{
			DefaultAction: def,
			Syscalls: []seccomp.SyscallGroup{{
				Action:             seccomp.ActionAllow,
				Names:              allowed,
				NamesWithCondtions: []seccomp.NameWithConditions{unshareFS},
			}},
		},
	}
	return f, f.Policy.Validate()
}

// setNoNewPrivs sets no_new_privs on every thread: no execve can gain
// privileges again, and seccomp filters may be loaded without
// CAP_SYS_ADMIN.
func setNoNewPrivs() error {
	if _, _, e := psx.Syscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", e)
	}
	return nil
}
