package sandbox

import (
	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"
)

// The seccomp allow-list, by what needs each call. Anything else is
// refused (by default the process is killed): no execve, mount, ptrace,
// bpf, kexec, module loading, keyctl, namespaces other than CLONE_FS, ...

// runtimeSyscalls are what the Go runtime, the cgo/glibc thread start-up
// and the standard library use while running.
var runtimeSyscalls = []string{
	"arch_prctl", "brk", "capget", "clock_getres", "clock_gettime", "clock_nanosleep",
	"clone", "clone3", "exit", "exit_group", "futex", "futex_waitv", "get_robust_list",
	"getcpu", "getegid", "geteuid", "getgid", "getgroups", "getpgrp", "getpid", "getppid",
	"getrandom", "getresgid", "getresuid", "getrlimit", "getrusage", "gettid", "gettimeofday",
	"getuid", "madvise", "membarrier", "mincore", "mlock", "mmap", "mprotect", "mremap",
	"munlock", "munmap", "nanosleep", "prlimit64", "restart_syscall", "rseq", "rt_sigaction",
	"rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "sched_getaffinity", "sched_yield",
	"set_robust_list", "set_tid_address", "setitimer", "sigaltstack", "sysinfo", "tgkill",
	"time", "timer_create", "timer_delete", "timer_settime", "tkill", "uname", "kill",
	"prctl", "wait4", "waitid",
}

// fileSyscalls are what passthrough and rafs do on files: fd-relative
// lookups and changes, handle-based opens, the creator threads'
// credential switch and private umask, xattrs, I/O.
var fileSyscalls = []string{
	"access", "close", "close_range", "copy_file_range", "dup", "dup2", "dup3",
	"faccessat", "faccessat2", "fadvise64", "fallocate", "fchdir", "chdir", "getcwd",
	"fchmod", "fchmodat", "fchmodat2", "fchown", "fchownat", "fcntl", "fdatasync",
	"fgetxattr", "flistxattr", "flock", "fremovexattr", "fsetxattr", "fstat", "fstatfs",
	"fsync", "ftruncate", "getdents64", "getxattr", "getxattrat", "lgetxattr", "linkat",
	"listxattr", "listxattrat", "llistxattr", "lremovexattr", "lseek", "lsetxattr",
	"lstat", "mkdirat", "mknodat", "name_to_handle_at", "newfstatat", "open",
	"open_by_handle_at", "openat", "openat2", "pread64", "preadv", "preadv2", "pwrite64",
	"pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
	"removexattr", "removexattrat", "renameat", "renameat2", "setfsgid", "setfsuid",
	"setgroups", "setxattr", "setxattrat", "stat", "statfs", "statx", "symlinkat",
	"sync_file_range", "syncfs", "umask", "unlinkat", "utimensat", "write",
	"writev", "msync", "sendfile", "splice", "tee", "ioctl",
}

// serveSyscalls are what the vhost-user and FUSE transports and the API
// server do on sockets and event fds they already have, and the poller.
var serveSyscalls = []string{
	"accept", "accept4", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "eventfd2", "getpeername", "getsockname", "getsockopt",
	"pipe", "pipe2", "poll", "ppoll", "pselect6", "select", "recvfrom", "recvmsg",
	"sendmsg", "sendto", "setsockopt", "shutdown",
}

// networkSyscalls make new sockets (nydusd mode: backends, the API).
var networkSyscalls = []string{"bind", "connect", "listen", "socket", "socketpair"}

// unshareFS allows the one unshare the daemon makes after confinement:
// creator and xattr threads take a private fs_struct (CLONE_FS only; new
// namespaces stay refused).
var unshareFS = seccomp.NameWithConditions{Name: "unshare", Conditions: seccomp.ArgumentConditions{
	{Argument: 0, Operation: seccomp.Equal, Value: unix.CLONE_FS},
}}
