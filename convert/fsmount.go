package convert

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/hostmount"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// registryBackend is the daemon's registry backend for the target
// repository, with the credentials the keychain holds for its registry.
func (c *checker) registryBackend() (backend.Backend, error) {
	cfg := backend.RegistryConfig{Scheme: c.repo.Registry.Scheme(), Host: c.repo.RegistryStr(), Repo: c.repo.RepositoryStr()}
	a, err := c.o.Keychain.Resolve(c.repo.Registry)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", c.repo.RegistryStr(), err)
	}
	if a != authn.Anonymous {
		ac, err := a.Authorization()
		if err != nil {
			return nil, fmt.Errorf("credentials for %s: %w", c.repo.RegistryStr(), err)
		}
		switch {
		case ac.RegistryToken != "":
			cfg.RegistryToken = ac.RegistryToken
		case ac.Auth != "":
			cfg.Auth = ac.Auth
		case ac.Username != "":
			cfg.Auth = base64.StdEncoding.EncodeToString([]byte(ac.Username + ":" + ac.Password))
		}
	}
	return backend.New(&backend.BackendConfig{Type: "registry", Registry: cfg}, backend.Options{})
}

// nydusTree reads the Nydus image the way a container sees it: the
// bootstrap opened with the registry backend (blobs fetched chunk by chunk
// on first read, each chunk checked against its digest), mounted on the
// host through /dev/fuse by our FUSE server, and walked with ordinary
// system calls. Where no FUSE mount can be made (no /dev/fuse, not
// allowed), the same image is walked through the rafs reader, still
// lazily from the registry; how is returned.
func (c *checker) nydusTree(ctx context.Context, bootPath string) (Tree, string, error) {
	var be backend.Backend
	var err error
	from := "registry"
	if c.o.Backend != nil {
		be, err = backend.New(c.o.Backend, backend.Options{})
		from = c.o.Backend.Type
	} else {
		be, err = c.registryBackend()
	}
	if err != nil {
		return nil, "", err
	}
	img, err := rafs.Open(bootPath, rafs.Options{Backend: be, DigestValidate: true})
	if err != nil {
		return nil, "", err
	}
	defer img.Close()
	mnt, err := os.MkdirTemp(c.work, "mnt-")
	if err != nil {
		return nil, "", err
	}
	defer os.Remove(mnt)
	srv, merr := hostmount.Mount(rafs.NewFS(img, rafs.FSOptions{}), mnt, hostmount.MountOptions(false))
	if merr != nil {
		t, err := RafsTree(ctx, img)
		return t, fmt.Sprintf("rafs reader over the %s backend (no FUSE mount: %v)", from, merr), err
	}
	t, err := MountTree(mnt)
	if uerr := srv.Unmount(); uerr != nil && err == nil {
		err = fmt.Errorf("unmount %s: %w", mnt, uerr)
	}
	srv.Wait()
	return t, "FUSE mount over the " + from + " backend", err
}

// MountTree walks a directory tree with lstat, readlink, listxattr and
// read, as any program would.
func MountTree(root string) (Tree, error) {
	t := Tree{}
	buf := make([]byte, 1<<20)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root)
		if rel == "" {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		e := &Entry{Mode: st.Mode, UID: int(st.Uid), GID: int(st.Gid)}
		xs, err := listXattrs(p)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		e.Xattrs = xs
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			f, err := os.Open(p)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			h := sha256.New()
			n, err := io.CopyBuffer(h, f, buf)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: read: %w", rel, err)
			}
			e.Size, e.Digest = n, hex.EncodeToString(h.Sum(nil))
		case syscall.S_IFLNK:
			if e.Target, err = os.Readlink(p); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		case syscall.S_IFCHR, syscall.S_IFBLK:
			e.Major, e.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
		}
		t[rel] = e
		return nil
	})
	return t, err
}

func listXattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	if size == 0 {
		return nil, nil
	}
	names := make([]byte, size)
	if size, err = unix.Llistxattr(p, names); err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	out := map[string]string{}
	for _, n := range strings.Split(strings.TrimRight(string(names[:size]), "\x00"), "\x00") {
		v := make([]byte, 4096)
		k, err := unix.Lgetxattr(p, n, v)
		if errors.Is(err, unix.ERANGE) {
			if k, err = unix.Lgetxattr(p, n, nil); err == nil {
				v = make([]byte, k)
				k, err = unix.Lgetxattr(p, n, v)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", n, err)
		}
		out[n] = string(v[:k])
	}
	return out, nil
}
