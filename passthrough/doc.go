// Package passthrough shares a host directory read-write with a guest as a
// go-fuse fuse.RawFileSystem, the way virtiofsd does. fusewire serves it over
// virtqueues; tests mount it on the host through /dev/fuse.
//
// # Confinement
//
// Every operation is relative to an inode the guest reached by lookups from
// the shared directory, and every lookup resolves exactly one name with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, O_PATH|
// O_NOFOLLOW) relative to the parent's O_PATH fd. Names with '/' or NUL, and
// "." or ".." outside lookup, are refused with EINVAL; ".." of the shared
// directory is the shared directory. Symlinks are never followed by the
// daemon: a symlink node used as a parent gives ENOTDIR, Create over a
// symlink gives ELOOP, Open of anything but a regular file or a directory
// gives EBADF (so a guest-made device node never opens a host device).
//
// # /proc/self/fd
//
// Some operations reach an inode through its fd's entry in /proc/self/fd:
// re-opening pinned inodes, truncate, the chmod and utimes fallbacks for
// kernels without the AT_EMPTY_PATH forms, xattrs. They never use that
// path: they go relative to a directory fd of /proc/self/fd
// (Options.ProcSelfFD, opened before the sandbox confines the daemon, or
// opened at New), with our fd number as the only name: openat(procfd, "N"),
// fchmodat, utimensat, open+ftruncate. So the daemon needs no /proc in its
// root (chroot into the share, or a root that is the share), and nothing
// in the share can stand in for procfs. New checks the fd is this
// process's /proc/self/fd. Xattrs use getxattrat and its siblings on
// (procfd, "N") where the kernel has them (Linux 6.13; x/sys numbers them
// but has no wrappers, hence the raw calls); otherwise f*xattr on a fresh
// read-only fd for regular files and directories, and for symlinks and
// special files, which cannot be opened, the path calls with the relative
// name "N" on one locked OS thread that unshared CLONE_FS and fchdir'd
// into procfd, as virtiofsd does.
//
// # File descriptors
//
// With InodeFileHandles prefer (the library's default; the daemon's is
// never, as virtiofsd's) inodes are identified by file handle
// (name_to_handle_at, which carries the inode generation, so recycled
// inode numbers never alias) and opened with open_by_handle_at when
// needed. Their O_PATH fds live in an LRU of Options.FdCacheSize entries
// (a quarter of RLIMIT_NOFILE by default), so the number of inodes the
// guest remembers does not bound the fds the daemon holds. Where the
// filesystem has no handles (some overlay or FUSE setups), or with
// InodeFileHandles "never", an inode pins one O_PATH fd until the
// guest forgets it, as virtiofsd does, with one difference: an inode a
// LOOKUP or a READDIRPLUS listing meets first is answered from one statx
// of the name (one component, never followed, from the directory's own
// fd) and is "listed": it pins no fd until an operation needs one, which
// then opens the name where the inode was last seen with the same
// confined openat2 and keeps the fd only if the statx of it shows the
// same device, inode number and birth time (a listed inode has no fd to
// keep its number from being recycled, and ext4 recycles at once; the
// birth time tells a new inode apart). A name renamed, removed or
// replaced on the host since answers ESTALE, as virtiofsd's inodes
// identified by handle do when the handle no longer opens, and the
// guest's VFS looks the path up again; a guest RENAME or UNLINK that
// takes a listed inode's name pins the inode first (one statx, as
// virtiofsd's unlink looks the name up too). A walk (find, ls -l, du)
// and a stat of a path use few of the inodes they meet, and each listed
// one spares an openat2, an fstat and a close, and an fd held while the
// guest remembers it (measured in docs/benchmarks.md, issue 15). Where
// the filesystem keeps no birth time, lookups and listings open the name
// at once. FORGET drops the inode when its lookup count reaches zero.
// Node IDs are never reused, so the generation is always 0. Attr.Ino is
// the host inode number.
//
// Guest-held fds (open files and directories, and pinned O_PATH fds) are
// counted against Options.MaxOpenFiles, by default RLIMIT_NOFILE less the
// LRU and a reserve for the daemon's own fds, as virtiofsd's guest fd
// semaphore: past it the guest gets ENFILE and the daemon keeps working.
// READDIR replies are capped at MaxReadDir (1 MiB) and use pooled getdents
// buffers. A handle keeps its buffer between requests only while it holds
// entries a reply had no room for (the guest asks a page at a time), so a
// directory is read from the host once however it is paged, and at most
// 256 handles (8 MiB) keep one.
//
// # Extended attributes
//
// Names pass through an XattrMap (virtiofsd's --xattrmap rules). The
// default refuses trusted.* from the guest; nydusd's command line maps the
// guest's trusted.* to user.virtiofs.trusted.* (see TrustedToUserXattrMap
// and docs/security.md).
//
// # Credentials
//
// Create, Tmpfile, Mkdir, Mknod and Symlink run with the caller's
// fsuid/fsgid (and no supplementary groups) on an OS thread kept for
// creations, like virtiofsd: the host kernel then sets the owner and group (setgid
// directories included) and checks permissions itself. The alternative,
// create as root then chown, gets setgid inheritance and permission checks
// wrong and leaves a window where the file is root's. Other operations run
// with the daemon's credentials: the guest kernel (default_permissions) has
// checked them. The process umask is left alone (the daemon's socket needs
// it): creations run on a few OS threads that unshared CLONE_FS and set their
// own umask to 0, since the guest has applied the caller's umask already, and
// nothing is chmod'ed after creating (a lookup by name after the fact could
// find an inode a concurrent RENAME_EXCHANGE put there).
//
// # Reads and writes
//
// Read returns fsapi.FileResult(fd, off, n) wrapped so the open file stays
// referenced until the transport calls Done; the transport preadv's into
// guest memory. Writes pwritev the guest's buffers directly. O_APPEND is
// kept on the host fd, so appends land at the host's end of file. With
// killpriv_v2 the kernel asks the server to clear suid/sgid
// (FUSE_WRITE_KILL_SUIDGID on WRITE, OPEN_KILL_SUIDGID on a truncating
// OPEN, FATTR_KILL_SUIDGID on SETATTR) and the daemon does; without it (the
// default, as virtiofsd's --killpriv-v2 is off) the guest kernel clears them
// itself with a SETATTR, which matters because the host kernel would not
// when the daemon (CAP_FSETID) writes.
//
// # Cache modes
//
// Entry and attribute timeouts: never 0 s, auto 1 s, metadata and always
// 86400 s. Open flags as the Rust virtiofsd: never → FOPEN_DIRECT_IO on
// files; auto → none; metadata → FOPEN_DIRECT_IO on files, FOPEN_CACHE_DIR|
// FOPEN_KEEP_CACHE on directories; always → FOPEN_KEEP_CACHE, plus
// FOPEN_CACHE_DIR on directories. READDIRPLUS is for all but never
// (Options.ReadDirPlus tells the transport). Unlike either virtiofsd, a
// file opened read-only also gets FOPEN_NOFLUSH in every mode: its FLUSH
// (a dup closed on the host) does nothing, since this filesystem holds no
// host locks, and skipping it saves the guest one of the five round trips
// of reading a small file (LOOKUP, OPEN, READ, FLUSH, RELEASE). Should
// POSIX locks ever be served from host locks, that must be revisited.
//
// Nothing here is copied from virtiofsd; the kernel interfaces are used
// directly through golang.org/x/sys/unix because no Go library offers an
// fd-relative, handle-based passthrough filesystem (go-fuse's loopback is
// path-based and follows the caller's symlinks).
package passthrough
