// Package sandbox confines the daemon process to the shared directory, as
// virtiofsd's --sandbox=namespace|chroot|none does. It is defence in depth:
// passthrough already resolves every guest name with openat2
// (RESOLVE_BENEATH); the sandbox makes the rest of the host unreachable
// even if that failed.
//
// # Use
//
//	sb, err := sandbox.New(sandbox.Config{Mode: mode, SharedDir: dir})
//	if sb.Child() { socketPath = "" }   // the parent owns and removes it
//	l, err := sb.Listener(openListener) // the parent's, inherited in the child
//	res, err := sb.Enter(ctx, l)
//	if res.Exited { return res.ExitCode } // namespace parent: child has run
//	if res.Confined { socketPath = "" }   // that path now means a file in the share
//	fs := passthrough.New(res.SharedDir, passthrough.Options{ProcSelfFD: res.ProcSelfFD, ...})
//	err = sandbox.Confine(sandbox.Confinement{...}, res.Confiner) // then serve
//
// Enter comes after everything outside the share is open (the listener,
// syslog) and before the filesystem is made: in namespace mode the share's
// copy is the new root, and only a filesystem opened there sees host
// mounts made later.
//
// # namespace (the default)
//
// A Go process is multi-threaded, and unshare(CLONE_NEWNS) is refused to a
// process whose threads share their fs_struct; so, as is usual in Go, the
// daemon re-executes itself (/proc/self/exe, same arguments, a marker in the
// environment) in new mount, pid, net and ipc namespaces, handing down the
// listening socket as fd 3. The socket path is thus resolved once, on the
// host, by the parent. The parent forwards SIGHUP, SIGQUIT and the first
// SIGTERM or SIGINT (or a SIGTERM when ctx ends), kills the child if it has
// not stopped DefaultStopTimeout after that (the daemon must be gone
// within 1 s of SIGTERM), and returns the
// child's exit code (128+N for signal N). The child dies with the parent
// (PR_SET_PDEATHSIG). stdin, stdout and stderr are shared, so Kata still
// reads "Waiting for vhost-user socket connection..." from the daemon's
// stderr.
//
// The child is pid 1 of its pid namespace, has only a loopback interface
// (down), and, as virtiofsd, makes the share its root:
//
//  1. every mount becomes a slave (MS_REC|MS_SLAVE, as virtiofsd): nothing
//     it mounts reaches the host, and host mounts made under a shared
//     directory that the host marks shared (Kata binds it so) still arrive;
//  2. open_tree(OPEN_TREE_CLONE|AT_RECURSIVE) takes a detached copy of the
//     share with its submounts (still a slave);
//  3. a fresh procfs of the new pid namespace is mounted on /proc (some
//     containers refuse it; the inherited /proc then serves) and
//     /proc/self/fd is opened (O_PATH): Result.ProcSelfFD;
//  4. the share's copy is attached over /proc (which, unlike the share's
//     path, works when the share is "/" too) and entered;
//  5. pivot_root(".", ".") and umount2(".", MNT_DETACH) drop the host tree,
//     procfs included.
//
// The root is then exactly the share: the guest sees nothing extra, and
// procfs is reachable only through Result.ProcSelfFD, which passthrough
// uses for everything it does through /proc/self/fd (Options.ProcSelfFD).
//
// # chroot
//
// For containers without CAP_SYS_ADMIN: chroot(2) into the share in
// process, then chdir("/"). Go makes its threads with CLONE_FS, so one
// chroot moves every thread (a test checks each thread's root; the one
// thread passthrough may later unshare CLONE_FS on, for xattrs of
// symlinks on kernels before 6.13, copies that root). There is no /proc
// inside: Result.ProcSelfFD, opened before the chroot, is the way to it.
// The listener is set not to unlink its path on close, since the path
// would then name a file in the share; the socket file stays behind.
//
// # none
//
// Nothing is done.
//
// # RAFS images
//
// Only a shared directory (--shared-dir) is sandboxed. A RAFS image
// (--bootstrap) needs its bootstrap and blob directory, which lie outside
// any one directory; nydusd has no sandbox either, and callers use None
// for it.
//
// # Confinement of the serving process
//
// Confine (called by the daemon once the filesystem is open, right before
// it serves) does what virtiofsd does after its sandbox:
//
//   - capabilities: only CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID,
//     MKNOD and SETFCAP stay (DAC_READ_SEARCH too with file handles, for
//     open_by_handle_at), in the effective, permitted and bounding sets;
//     inheritable and ambient are emptied; --modcaps (+name/-name) changes
//     the list. Without CAP_SYS_ADMIN the host refuses trusted.* xattrs;
//   - no_new_privs on every thread;
//   - a seccomp allow-list (syscalls.go) on every thread (TSYNC); anything
//     else kills the process (--seccomp=kill, the default), is logged
//     (log), raises SIGSYS (trap), or the filter is off (none). No execve,
//     mount, pivot_root, ptrace, bpf, module or key calls; unshare only
//     with CLONE_FS (the creator and xattr threads); socket, connect, bind
//     and listen only with nydusd's command line or a backend config.
//
// Libraries: capabilities go through libcap's Go packages
// (kernel.org/pub/linux/libs/security/libcap/cap and psx, by the libcap
// maintainer), because capabilities are per thread and a Go process has
// many: psx changes them on every thread, also in a cgo binary (ours links
// cgo through net), where the runtime's AllThreadsSyscall refuses. In a
// cgo binary psx finds the threads in /proc/PID/task, which the confined
// root lacks: the capability changes are made from a Confiner thread that
// kept a root with procfs (Result.Confiner). The seccomp filter is built
// with github.com/elastic/go-seccomp-bpf, pure Go (no libseccomp, no cgo),
// which assembles and loads a BPF allow-list from syscall names with
// argument conditions and the TSYNC flag; libseccomp-golang would add a C
// library dependency for the same result.
//
// Nothing here is copied from virtiofsd; the system calls are made through
// golang.org/x/sys/unix and os/exec, since no Go library sets up such a
// sandbox for a process that must keep serving an inherited socket.
package sandbox
