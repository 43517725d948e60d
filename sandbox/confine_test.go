package sandbox

import (
	"testing"

	"kernel.org/pub/linux/libs/security/libcap/cap"
)

func TestKeptCaps(t *testing.T) {
	for _, c := range []struct {
		conf Confinement
		has  []cap.Value
		not  []cap.Value
		bad  bool
	}{
		{conf: Confinement{}, has: baseCaps, not: []cap.Value{cap.SYS_ADMIN, cap.DAC_READ_SEARCH, cap.SETPCAP}},
		{conf: Confinement{FileHandles: true}, has: []cap.Value{cap.DAC_READ_SEARCH}},
		{conf: Confinement{ModCaps: "+sys_admin:-MKNOD:+CAP_SYS_RESOURCE"}, has: []cap.Value{cap.SYS_ADMIN, cap.SYS_RESOURCE}, not: []cap.Value{cap.MKNOD}},
		{conf: Confinement{ModCaps: "sys_admin"}, bad: true},
		{conf: Confinement{ModCaps: "+no_such_cap"}, bad: true},
	} {
		got, err := KeptCaps(c.conf)
		if (err != nil) != c.bad {
			t.Errorf("%+v: error %v", c.conf, err)
			continue
		}
		set := map[cap.Value]bool{}
		for _, v := range got {
			set[v] = true
		}
		for _, v := range c.has {
			if !set[v] {
				t.Errorf("%+v: %v missing from %v", c.conf, v, got)
			}
		}
		for _, v := range c.not {
			if set[v] {
				t.Errorf("%+v: %v kept", c.conf, v)
			}
		}
	}
	for _, mode := range []string{"", SeccompKill, SeccompLog, SeccompTrap} {
		if _, err := seccompFilter(Confinement{Seccomp: mode, Network: true}); err != nil {
			t.Errorf("filter %q: %v", mode, err)
		}
	}
	if err := Confine(Confinement{Seccomp: "bogus"}, nil); err == nil {
		t.Error("Confine accepted --seccomp=bogus")
	}
}
