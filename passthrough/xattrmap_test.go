package passthrough

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func TestParseXattrMap(t *testing.T) {
	m, err := ParseXattrMap(TrustedToUserXattrMap)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		guest, host string
		err         error
	}{
		{"trusted.overlay.opaque", "user.virtiofs.trusted.overlay.opaque", nil},
		{"user.foo", "user.foo", nil},
		{"security.capability", "security.capability", nil},
		{"user.virtiofs.trusted.x", "", syscall.EPERM},
	} {
		h, err := m.toHost(c.guest, false)
		if h != c.host || err != c.err {
			t.Errorf("toHost(%q) = %q, %v; want %q, %v", c.guest, h, err, c.host, c.err)
		}
	}
	got := string(m.listToGuest([]byte("user.virtiofs.trusted.overlay.opaque\x00trusted.host\x00user.a\x00")))
	if got != "trusted.overlay.opaque\x00user.a\x00" {
		t.Errorf("list %q", got)
	}
	d, _ := ParseXattrMap(DefaultXattrMap)
	if _, err := d.toHost("trusted.overlay.redirect", false); err != syscall.EPERM {
		t.Errorf("default map lets trusted.* through: %v", err)
	}
	if h, err := d.toHost("security.ima", false); h != "security.ima" || err != nil {
		t.Errorf("default map: security.ima → %q, %v", h, err)
	}
	m, err = ParseXattrMap(" /prefix/all/trusted./user.virtiofs./\n /bad/server//trusted./ /unsupported/all/security.selinux/security.selinux/ /ok/all/// ")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.toHost("security.selinux", true); err != syscall.ENOTSUP {
		t.Errorf("unsupported: %v", err)
	}
	for _, bad := range []string{"", ":nope:all:::", ":ok:galaxy:::", ":ok:all:"} {
		if _, err := ParseXattrMap(bad); err == nil {
			t.Errorf("ParseXattrMap(%q) accepted", bad)
		}
	}
}

// TestXattrMapOnHost: with the default map the guest cannot set trusted.*
// on host files at all; with nydusd's map its trusted.* lands as
// user.virtiofs.trusted.* and reads back under the guest's name.
func TestXattrMapOnHost(t *testing.T) {
	for _, c := range []struct {
		name    string
		rules   string
		setErr  fuse.Status
		hostKey string
	}{
		{"default", "", fuse.EPERM, ""},
		{"nydusd", TrustedToUserXattrMap, fuse.OK, "user.virtiofs.trusted.overlay.opaque"},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := Options{Xattr: true}
			if c.rules != "" {
				opts.XattrMap, _ = ParseXattrMap(c.rules)
			}
			e := newEnv(t, opts)
			os.Mkdir(e.host("d"), 0o755)
			if err := unix.Setxattr(e.host("d"), "trusted.host", []byte("h"), 0); err != nil {
				t.Fatal(err)
			}
			d := e.lookup(t, 1, "d").NodeId
			s := e.fs.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: hdr(d)}, "trusted.overlay.opaque", []byte("y"))
			if s != c.setErr {
				t.Fatalf("set trusted.overlay.opaque: %v, want %v", s, c.setErr)
			}
			if _, err := unix.Getxattr(e.host("d"), "trusted.overlay.opaque", make([]byte, 8)); err == nil {
				t.Fatal("trusted.overlay.opaque landed on the host as trusted.*")
			}
			if c.hostKey == "" {
				return
			}
			v := make([]byte, 8)
			if n, err := unix.Getxattr(e.host("d"), c.hostKey, v); err != nil || string(v[:n]) != "y" {
				t.Fatalf("host %s: %q, %v", c.hostKey, v[:max(n, 0)], err)
			}
			h := hdr(d)
			n, s := e.fs.GetXAttr(nil, &h, "trusted.overlay.opaque", v)
			if !s.Ok() || string(v[:n]) != "y" {
				t.Fatalf("guest get: %q, %v", v[:n], s)
			}
			sz, s := e.fs.ListXAttr(nil, &h, nil)
			list := make([]byte, sz)
			if _, s2 := e.fs.ListXAttr(nil, &h, list); !s.Ok() || !s2.Ok() {
				t.Fatal(s, s2)
			}
			if got := strings.Split(strings.TrimRight(string(list), "\x00"), "\x00"); len(got) != 1 || got[0] != "trusted.overlay.opaque" {
				t.Fatalf("guest list %q (the host's own trusted.host must be hidden)", got)
			}
		})
	}
}

// FuzzXattrMap parses operator rules and maps guest names and host lists:
// nothing panics, and under the default and nydusd maps no guest name ever
// reaches the host as trusted.*.
func FuzzXattrMap(f *testing.F) {
	f.Add(":prefix:all:trusted.:user.virtiofs.:", "trusted.overlay.opaque", []byte("user.a\x00trusted.b\x00"))
	f.Add(":map::user.virtiofs.:", "security.ima", []byte("user.virtiofs.x\x00\x00"))
	f.Add("/ok/all///", "trusted.", []byte("\x00"))
	fixed := []*XattrMap{}
	for _, r := range []string{DefaultXattrMap, TrustedToUserXattrMap} {
		m, err := ParseXattrMap(r)
		if err != nil {
			f.Fatal(err)
		}
		fixed = append(fixed, m)
	}
	f.Fuzz(func(t *testing.T, rules, name string, list []byte) {
		if m, err := ParseXattrMap(rules); err == nil {
			m.toHost(name, true)
			m.listToGuest(list)
		}
		for _, m := range fixed {
			if h, err := m.toHost(name, false); err == nil && strings.HasPrefix(h, "trusted.") {
				t.Fatalf("guest %q reaches the host as %q", name, h)
			}
			m.listToGuest(list)
		}
	})
}
