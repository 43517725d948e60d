package passthrough

import (
	"fmt"
	"strings"
	"syscall"
)

// XattrMap translates extended attribute names between the guest (client)
// and the host (server), in virtiofsd's --xattrmap syntax: rules
// ":type:scope:key:prepend:" whose first non-blank character is the field
// separator, tried in order, the first match deciding.
//
//   - scope client matches key against a name from the guest (get, set,
//     remove); server matches prepend against a host name (list); all is
//     both.
//   - prefix: a guest name starting with key is stored as prepend+name;
//     a host name starting with prepend is listed without it.
//   - ok: the name passes unchanged.
//   - bad: the guest gets EPERM (ENODATA for get); the host name is hidden.
//   - unsupported: as bad, with ENOTSUP.
//   - map (":map:key:prepend:", no scope): prefix key with prepend, refuse
//     names starting with prepend from the guest, hide unprefixed key names
//     on the host, and let everything else through.
//
// A name no rule matches is refused (guest) or hidden (host).
type XattrMap struct{ rules []xattrRule }

type xattrRule struct {
	typ            string
	client, server bool
	key, prepend   string
}

// ParseXattrMap parses a virtiofsd --xattrmap string.
func ParseXattrMap(s string) (*XattrMap, error) {
	m := &XattrMap{}
	rest := s
	for {
		rest = strings.TrimLeft(rest, " \t\n\r")
		if rest == "" {
			break
		}
		sep := rest[:1]
		fields := strings.SplitN(rest[1:], sep, 5)
		if len(fields) < 4 {
			return nil, fmt.Errorf("xattrmap: rule %q: want %stype%sscope%skey%sprepend%s", rest, sep, sep, sep, sep, sep)
		}
		if fields[0] == "map" {
			// :map:key:prepend:
			key, prepend := fields[1], fields[2]
			if prepend == "" {
				return nil, fmt.Errorf("xattrmap: map rule needs a prefix")
			}
			m.rules = append(m.rules, xattrRule{typ: "prefix", client: true, server: true, key: key, prepend: prepend})
			if key == "" {
				m.rules = append(m.rules, xattrRule{typ: "bad", client: true, server: true})
			} else {
				m.rules = append(m.rules,
					xattrRule{typ: "bad", client: true, key: prepend},
					xattrRule{typ: "bad", server: true, prepend: key},
					xattrRule{typ: "ok", client: true, server: true})
			}
			rest = strings.Join(fields[3:], sep)
			continue
		}
		if len(fields) < 5 {
			return nil, fmt.Errorf("xattrmap: rule %q: want %stype%sscope%skey%sprepend%s", rest, sep, sep, sep, sep, sep)
		}
		r := xattrRule{typ: fields[0], key: fields[2], prepend: fields[3]}
		switch fields[0] {
		case "prefix", "ok", "bad", "unsupported":
		default:
			return nil, fmt.Errorf("xattrmap: unknown rule type %q", fields[0])
		}
		switch fields[1] {
		case "client":
			r.client = true
		case "server":
			r.server = true
		case "all":
			r.client, r.server = true, true
		default:
			return nil, fmt.Errorf("xattrmap: unknown scope %q", fields[1])
		}
		m.rules = append(m.rules, r)
		rest = fields[4]
	}
	if len(m.rules) == 0 {
		return nil, fmt.Errorf("xattrmap: no rules")
	}
	return m, nil
}

// toHost maps a guest name to the host's, or refuses it (get: whether the
// refusal is for a read, which answers ENODATA as virtiofsd).
func (m *XattrMap) toHost(name string, get bool) (string, error) {
	if m == nil {
		return name, nil
	}
	for _, r := range m.rules {
		if !r.client || !strings.HasPrefix(name, r.key) {
			continue
		}
		switch r.typ {
		case "prefix":
			return r.prepend + name, nil
		case "ok":
			return name, nil
		case "unsupported":
			return "", syscall.ENOTSUP
		}
		if get {
			return "", syscall.ENODATA
		}
		return "", syscall.EPERM
	}
	return "", syscall.EPERM
}

// toGuest maps a host name for a listing; ok is false to hide it.
func (m *XattrMap) toGuest(name string) (string, bool) {
	if m == nil {
		return name, true
	}
	for _, r := range m.rules {
		if !r.server || !strings.HasPrefix(name, r.prepend) {
			continue
		}
		switch r.typ {
		case "prefix":
			return name[len(r.prepend):], true
		case "ok":
			return name, true
		}
		return "", false
	}
	return "", false
}

// listToGuest maps a NUL-separated host list.
func (m *XattrMap) listToGuest(list []byte) []byte {
	var out []byte
	for _, n := range strings.Split(string(list), "\x00") {
		if n == "" {
			continue
		}
		if g, ok := m.toGuest(n); ok {
			out = append(append(out, g...), 0)
		}
	}
	return out
}

// Xattr maps for the two command lines: virtiofsd's default keeps every
// name but refuses trusted.* from the guest (the daemon lacks
// CAP_SYS_ADMIN for them anyway, and a guest must never set trusted.* on
// host files); nydusd's maps the guest's trusted.* (overlayfs's
// trusted.overlay.* of Kata's container rootfs upper directories) to
// user.virtiofs.trusted.* on the host, and hides the host's own trusted.*.
const (
	DefaultXattrMap       = ":bad:client:trusted.:: :ok:all:::"
	TrustedToUserXattrMap = ":map:trusted.:user.virtiofs.:"
)
