package fusewire

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

const (
	// KernelMajor is the FUSE protocol major version.
	KernelMajor = 7
	// MinMinor is the oldest protocol minor accepted (go-fuse's floor).
	MinMinor = 12
	// MaxMinor caps the negotiated minor: 7.40 is the newest protocol whose
	// structs go-fuse v2.12 has in full (InitOut with max_stack_depth,
	// OpenOut with backing_id, statx). Linux 6.1 guests send 7.38.
	MaxMinor = 40

	// capInitExt is FUSE_INIT_EXT: flags2 carries bits 32-63.
	capInitExt = 1 << 30

	// Capabilities a virtio-fs device never offers: splice needs
	// /dev/fuse, passthrough backing ids and io_uring need a /dev/fuse
	// connection, DAX (mappings, per-inode DAX) is not implemented, and
	// request extensions (security context, supplementary groups) would be
	// cut off unread.
	neverCaps = fuse.CAP_SPLICE_WRITE | fuse.CAP_SPLICE_MOVE | fuse.CAP_SPLICE_READ |
		fuse.CAP_PASSTHROUGH | fuse.CAP_OVER_IO_URING | fuse.CAP_HAS_INODE_DAX |
		fuse.CAP_MAP_ALIGNMENT | fuse.CAP_SECURITY_CTX | fuse.CAP_CREATE_SUPP_GROUP | capInitExt

	// defaultCaps are offered unless an option turns them off; they match
	// what the C virtiofsd answers (ASYNC_READ, ATOMIC_O_TRUNC,
	// EXPORT_SUPPORT, BIG_WRITES, READDIRPLUS(_AUTO), ASYNC_DIO,
	// PARALLEL_DIROPS, MAX_PAGES; AUTO_INVAL_DATA is added separately).
	defaultCaps = fuse.CAP_ASYNC_READ | fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_EXPORT_SUPPORT |
		fuse.CAP_BIG_WRITES | fuse.CAP_READDIRPLUS | fuse.CAP_READDIRPLUS_AUTO |
		fuse.CAP_ASYNC_DIO | fuse.CAP_PARALLEL_DIROPS | fuse.CAP_MAX_PAGES
)

// wantedCaps returns the capabilities the device would like, before they
// are intersected with what the kernel proposes.
func (d *Device) wantedCaps() uint64 {
	m := &d.opts.Mount
	want := uint64(defaultCaps) | m.ExtraCapabilities
	if m.ExplicitDataCacheControl {
		want |= fuse.CAP_EXPLICIT_INVAL_DATA
	} else {
		want |= fuse.CAP_AUTO_INVAL_DATA
	}
	if d.opts.AnnounceSubmounts {
		want |= fuse.CAP_SUBMOUNTS
	}
	if m.EnableLocks {
		want |= fuse.CAP_FLOCK_LOCKS | fuse.CAP_POSIX_LOCKS
	}
	if m.EnableSymlinkCaching {
		want |= fuse.CAP_CACHE_SYMLINKS
	}
	if m.EnableAcl {
		want |= fuse.CAP_POSIX_ACL
	}
	if m.SyncRead {
		want &^= fuse.CAP_ASYNC_READ
	}
	if m.DisableReadDirPlus {
		want &^= fuse.CAP_READDIRPLUS | fuse.CAP_READDIRPLUS_AUTO
	}
	return want &^ (m.DisabledCapabilities | neverCaps)
}

// doInit negotiates the session. It does not call RawFileSystem.Init: that
// takes the *fuse.Server of a /dev/fuse mount, which does not exist here.
// A session still open (no DESTROY came) is wiped first through
// RawFileSystem.OnUnmount, the hook DESTROY uses: go-fuse's interface
// already has it, so filesystems need no other one (passthrough forgets
// every inode and closes every handle there; vfs passes it to each mount).
func doInit(r *request) {
	dev := r.d
	in := inStruct[fuse.InitIn](r)
	if in.Major != KernelMajor || in.Minor < MinMinor {
		r.violation("unsupported FUSE protocol version")
		r.status = fuse.Status(syscall.EPROTO)
		return
	}
	if dev.session.Load() != nil {
		// INIT without DESTROY: the guest rebooted or its driver was
		// reset without unmounting. It holds none of the previous
		// session's node IDs or handles, and will never FORGET or RELEASE
		// them: wipe them as DESTROY would, or every crashed boot leaks
		// its open files and inodes.
		dev.log.WithFields(r.fields()).Info("INIT without DESTROY: forgetting the previous FUSE session")
		dev.fs.OnUnmount()
	}
	kernel := uint64(in.Flags)
	ext := in.Minor >= 36 && in.Flags&capInitExt != 0
	if ext {
		kernel |= uint64(in.Flags2) << 32
	} else {
		in.Flags2 = 0
	}
	flags := dev.wantedCaps() & kernel

	m := &dev.opts.Mount
	out := outStruct[fuse.InitOut](r)
	*out = fuse.InitOut{
		Major:               KernelMajor,
		Minor:               min(in.Minor, MaxMinor),
		MaxReadAhead:        in.MaxReadAhead,
		MaxBackground:       uint16(m.MaxBackground),
		CongestionThreshold: uint16(m.CongestionThreshold),
		MaxWrite:            uint32(dev.maxWrite),
		TimeGran:            1,
		MaxPages:            uint16((dev.maxWrite + 4095) / 4096),
	}
	if m.MaxReadAhead > 0 && uint32(m.MaxReadAhead) < out.MaxReadAhead {
		out.MaxReadAhead = uint32(m.MaxReadAhead)
	}
	out.Flags = uint32(flags)
	if ext {
		out.Flags |= capInitExt
		out.Flags2 = uint32(flags >> 32)
	} else {
		flags &= 0xffffffff
	}
	s := &Session{Kernel: *in, Reply: *out, Flags: flags}
	dev.session.Store(s)
	dev.log.WithFields(r.fields()).Infof(
		"FUSE session: guest proposes %d.%d flags=%#x max_readahead=%d; reply %d.%d flags=%#x max_pages=%d max_write=%d",
		in.Major, in.Minor, kernel, in.MaxReadAhead, out.Major, out.Minor, flags, out.MaxPages, out.MaxWrite)
}
