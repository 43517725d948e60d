package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// readXattrs lists a file's xattrs without following symlinks.
func readXattrs(p string) ([]xattr, error) {
	buf := make([]byte, 4096)
	var n int
	var err error
	for {
		n, err = unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		break
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
	}
	var out []xattr
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 256)
		for {
			m, err := unix.Lgetxattr(p, name, val)
			if errors.Is(err, unix.ERANGE) {
				val = make([]byte, len(val)*16)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("read xattr %s of %s: %w", name, p, err)
			}
			val = val[:m]
			break
		}
		out = append(out, xattr{Name: name, Value: val})
	}
	return out, nil
}

type hostIno struct{ dev, ino uint64 }

// scanDir builds the tree of a host directory. Regular files keep their
// host path; their data is read later by the chunker.
func scanDir(ctx context.Context, root, whiteouts string, log logrus.FieldLogger) (*inode, error) {
	links := map[hostIno]*inode{}
	var scan func(hostPath, imgPath string) (*inode, error)
	scan = func(hostPath, imgPath string) (*inode, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var st unix.Stat_t
		if err := unix.Lstat(hostPath, &st); err != nil {
			return nil, fmt.Errorf("%s: %w", imgPath, err)
		}
		key := hostIno{uint64(st.Dev), st.Ino}
		if st.Mode&modeTypeMask != modeDir && st.Nlink > 1 {
			if n, ok := links[key]; ok {
				return n, nil
			}
		}
		n := &inode{
			Mode:      st.Mode,
			UID:       st.Uid,
			GID:       st.Gid,
			Mtime:     st.Mtim.Sec,
			MtimeNsec: uint32(st.Mtim.Nsec),
		}
		xs, err := readXattrs(hostPath)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", imgPath, err)
		}
		if err := checkXattrs(xs); err != nil {
			return nil, fmt.Errorf("%s: %w", imgPath, err)
		}
		n.Xattrs = xs
		switch st.Mode & modeTypeMask {
		case modeReg:
			n.Size = uint64(st.Size)
			n.srcPath = hostPath // opened (and errors reported) by chunkFiles
		case modeLnk:
			t, err := os.Readlink(hostPath)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", imgPath, err)
			}
			if len(t) > 4096 {
				return nil, fmt.Errorf("%s: symlink target longer than 4096 bytes", imgPath)
			}
			n.Target = t
			n.Size = uint64(len(t))
		case modeChr, modeBlk:
			n.Rdev = uint64(st.Rdev)
		case modeFifo:
		case modeDir:
			f, err := os.Open(hostPath)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", imgPath, err)
			}
			names, err := f.Readdirnames(-1)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", imgPath, err)
			}
			sort.Strings(names)
			for _, name := range names {
				if isWhiteoutName(whiteouts, n, name) {
					continue
				}
				childImg := filepath.Join(imgPath, name)
				c, err := scan(filepath.Join(hostPath, name), childImg)
				if err != nil {
					return nil, err
				}
				if c == nil || isWhiteoutEntry(whiteouts, n, name, c) {
					continue
				}
				n.Children = append(n.Children, &dentry{Name: name, Ino: c})
			}
		case modeSock:
			log.Infof("skipping socket %s", imgPath)
			return nil, nil
		default:
			return nil, fmt.Errorf("%s: unsupported file type %#o", imgPath, st.Mode&modeTypeMask)
		}
		if st.Mode&modeTypeMask != modeDir && st.Nlink > 1 {
			links[key] = n
		}
		return n, nil
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("source %s is not a directory", root)
	}
	return scan(root, "/")
}
