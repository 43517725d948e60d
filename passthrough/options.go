package passthrough

import (
	"fmt"
	"os"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
)

// Cache modes, as virtiofsd's --cache.
const (
	CacheNever    = "never"
	CacheAuto     = "auto"
	CacheMetadata = "metadata"
	CacheAlways   = "always"
)

// File handle modes, as virtiofsd's --inode-file-handles.
const (
	// HandlesNever keeps one O_PATH fd open per inode the guest knows.
	HandlesNever = "never"
	// HandlesPrefer identifies inodes by file handle and falls back to a
	// pinned O_PATH fd where the filesystem has no handles (the default).
	HandlesPrefer = "prefer"
	// HandlesMandatory fails lookups on filesystems without handles.
	HandlesMandatory = "mandatory"
)

// Options configure a passthrough filesystem.
type Options struct {
	// Cache is one of never, auto (default), metadata, always.
	Cache string
	// Xattr enables the extended attribute operations; without it they
	// answer ENOSYS, as virtiofsd without --xattr.
	Xattr bool
	// XattrMap translates or refuses xattr names (virtiofsd's --xattrmap,
	// see ParseXattrMap); nil is DefaultXattrMap, which refuses trusted.*
	// from the guest and passes everything else.
	XattrMap *XattrMap
	// ReadOnly refuses every operation that would change the share with
	// EROFS.
	ReadOnly bool
	// AllowDirectIO passes the guest's O_DIRECT through to the host open
	// (virtiofsd --allow-direct-io); by default it is dropped.
	AllowDirectIO bool
	// AnnounceSubmounts sets FUSE_ATTR_SUBMOUNT on directories that are
	// mount points on the host (virtiofsd --announce-submounts); the
	// transport must offer FUSE_SUBMOUNTS too.
	AnnounceSubmounts bool
	// InodeFileHandles is one of never, prefer (default), mandatory.
	InodeFileHandles string
	// FdCacheSize bounds the O_PATH fds kept open for inodes identified by
	// file handle. 0 picks a quarter of RLIMIT_NOFILE (at least 64).
	FdCacheSize int
	// MaxOpenFiles bounds the fds the guest can make the daemon hold (open
	// files and directories, and pinned O_PATH fds of inodes without file
	// handles); past it OPEN, OPENDIR, CREATE and lookups of such inodes
	// answer ENFILE. 0 picks RLIMIT_NOFILE less FdCacheSize (when inodes
	// have file handles) and a reserve of an eighth of the limit (at least
	// 128) for the daemon's own fds.
	MaxOpenFiles int
	// ProcSelfFD is a descriptor (O_PATH is enough) of this process's
	// /proc/self/fd directory, opened while procfs was reachable; the
	// filesystem reaches the inodes behind its own fds through it, never
	// through the path "/proc/self/fd", so it works in a chroot or a root
	// without /proc (sandbox.Result.ProcSelfFD). nil opens /proc/self/fd at
	// New. The caller keeps ownership; it must stay open while the
	// filesystem is in use.
	ProcSelfFD *os.File
	// Logger receives warnings; nil logs to logrus' standard logger.
	Logger logrus.FieldLogger
}

func (o *Options) normalize() error {
	switch o.Cache {
	case "":
		o.Cache = CacheAuto
	case CacheNever, CacheAuto, CacheMetadata, CacheAlways:
	default:
		return fmt.Errorf("passthrough: unknown cache mode %q (want never, auto, metadata or always)", o.Cache)
	}
	switch o.InodeFileHandles {
	case "":
		o.InodeFileHandles = HandlesPrefer
	case HandlesNever, HandlesPrefer, HandlesMandatory:
	default:
		return fmt.Errorf("passthrough: unknown inode-file-handles mode %q", o.InodeFileHandles)
	}
	if o.Logger == nil {
		o.Logger = logrus.StandardLogger()
	}
	return nil
}

// Timeout is the entry and attribute timeout virtiofsd uses for a cache
// mode: never 0 s, auto 1 s, metadata and always 86400 s.
func (o Options) Timeout() time.Duration {
	switch o.Cache {
	case CacheNever:
		return 0
	case CacheMetadata, CacheAlways:
		return 86400 * time.Second
	default:
		return time.Second
	}
}

// ReadDirPlus reports whether the transport should offer READDIRPLUS:
// virtiofsd disables it for cache=never.
func (o Options) ReadDirPlus() bool { return o.Cache != CacheNever }

// openFlags returns the FOPEN_* reply flags for an open of a file or a
// directory, as virtiofsd: never → direct I/O on files; metadata → direct
// I/O on files, cached directories; always → keep the page cache (and
// cached directories); auto → neither (close-to-open consistency).
func (o Options) openFlags(dir bool) uint32 {
	switch o.Cache {
	case CacheNever:
		if !dir {
			return fuse.FOPEN_DIRECT_IO
		}
	case CacheMetadata:
		if !dir {
			return fuse.FOPEN_DIRECT_IO
		}
		return fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	case CacheAlways:
		if dir {
			return fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_CACHE_DIR
		}
		return fuse.FOPEN_KEEP_CACHE
	}
	return 0
}
