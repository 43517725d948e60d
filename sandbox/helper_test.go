package sandbox

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// The test binary doubles as a tiny daemon: with helperEnv set it enters a
// sandbox the way runDaemon does and answers line commands on its
// listener, so the tests can look at the sandbox from inside.
const (
	helperEnv      = "SANDBOX_TEST_HELPER" // mode
	helperShareEnv = "SANDBOX_TEST_SHARE"
	helperSockEnv  = "SANDBOX_TEST_SOCK"
	readyLine      = "HELPER READY"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(Mode(mode), os.Getenv(helperShareEnv), os.Getenv(helperSockEnv)))
	}
	os.Exit(m.Run())
}

// helperMain is runDaemon in miniature.
func helperMain(mode Mode, share, sock string) int {
	lg := logrus.New()
	lg.SetOutput(os.Stderr)
	lg.SetLevel(logrus.DebugLevel)
	log := lg.WithField("pid", os.Getpid())

	// Opened on the host, before confinement, to look at every thread's
	// root afterwards.
	tasks, err := os.Open("/proc/self/task")
	if err != nil {
		log.Error(err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	sb, err := New(Config{Mode: mode, SharedDir: share, Logger: log})
	if err != nil {
		log.Error(err)
		return 1
	}
	l, err := sb.Listener(func() (*net.UnixListener, error) {
		return net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	})
	if err != nil {
		log.Error(err)
		return 1
	}
	res, err := sb.Enter(ctx, l)
	if err != nil {
		log.Error(err)
		return 1
	}
	if res.Exited {
		return res.ExitCode
	}
	context.AfterFunc(ctx, func() { l.Close() })
	fmt.Fprintln(os.Stderr, readyLine)
	c, err := l.AcceptUnix()
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		log.Error(err)
		return 1
	}
	context.AfterFunc(ctx, func() { c.Close() })
	h := &helper{res: res, tasks: tasks, child: sb.Child()}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		if cmd == "exit" {
			n, _ := strconv.Atoi(arg)
			return n
		}
		out, err := h.do(cmd, arg)
		if err != nil {
			out = "err " + err.Error()
		} else {
			out = "ok " + out
		}
		fmt.Fprintln(c, out)
	}
	// The frontend went away (or a signal closed the connection).
	return 0
}

type helper struct {
	res   Result
	tasks *os.File
	child bool
}

func devIno(st *unix.Stat_t) string { return fmt.Sprintf("%d:%d", st.Dev, st.Ino) }

func (h *helper) do(cmd, arg string) (string, error) {
	switch cmd {
	case "pid":
		return strconv.Itoa(os.Getpid()), nil
	case "child":
		return strconv.FormatBool(h.child), nil
	case "shareddir":
		return h.res.SharedDir, nil
	case "netifs":
		ifs, err := net.Interfaces()
		if err != nil {
			return "", err
		}
		var names []string
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return strings.Join(names, " "), nil
	case "ls":
		ents, err := os.ReadDir(arg)
		if err != nil {
			return "", err
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, " "), nil
	case "stat":
		var st unix.Stat_t
		if err := unix.Stat(arg, &st); err != nil {
			return "", err
		}
		return devIno(&st), nil
	case "walk":
		// Every dev:ino reachable by path from "/", not following links.
		var ids []string
		err := filepath.WalkDir("/", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			var st unix.Stat_t
			if unix.Lstat(p, &st) == nil {
				ids = append(ids, devIno(&st))
			}
			return nil
		})
		return strings.Join(ids, " "), err
	case "roots":
		// Every thread's root, as this process sees it.
		if _, err := h.tasks.Seek(0, 0); err != nil {
			return "", err
		}
		tids, err := h.tasks.Readdirnames(-1)
		if err != nil {
			return "", err
		}
		var roots []string
		for _, tid := range tids {
			r, err := readlinkat(int(h.tasks.Fd()), tid+"/root")
			if err != nil {
				return "", err
			}
			roots = append(roots, r)
		}
		return strings.Join(roots, " "), nil
	case "create":
		f, err := os.OpenFile(arg, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return "", err
		}
		return "", f.Close()
	case "hang":
		// Stop answering stop signals, as a wedged daemon would.
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		return "", nil
	case "procfd":
		return procFdOps(arg, h.res.ProcSelfFD)
	}
	return "", fmt.Errorf("unknown command %q", cmd)
}

func readlinkat(dir int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dir, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// procFdOps does what passthrough does through its fd of /proc/self/fd on
// an O_PATH fd of file: open it again for writing, truncate, set and get
// an xattr, chmod; all relative to procDir, the fd Enter handed over.
func procFdOps(file string, procDir *os.File) (string, error) {
	if procDir == nil {
		return "", fmt.Errorf("no ProcSelfFD")
	}
	fd, err := unix.Open(file, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	dir, n := int(procDir.Fd()), strconv.Itoa(fd)
	w, err := unix.Openat(dir, n, unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("openat ProcSelfFD %s: %w", n, err)
	}
	defer unix.Close(w)
	if _, err := unix.Write(w, []byte("written via proc")); err != nil {
		return "", err
	}
	if err := unix.Ftruncate(w, 7); err != nil {
		return "", fmt.Errorf("truncate: %w", err)
	}
	if err := unix.Fsetxattr(w, "user.sandbox", []byte("yes"), 0); err != nil {
		return "", fmt.Errorf("setxattr: %w", err)
	}
	buf := make([]byte, 16)
	k, err := unix.Fgetxattr(w, "user.sandbox", buf)
	if err != nil {
		return "", fmt.Errorf("getxattr: %w", err)
	}
	if err := unix.Fchmodat(dir, n, 0o640, 0); err != nil {
		return "", fmt.Errorf("chmod: %w", err)
	}
	r, err := unix.Openat(dir, n, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("openat ProcSelfFD: %w", err)
	}
	defer unix.Close(r)
	data := make([]byte, 64)
	m, err := unix.Read(r, data)
	if err != nil {
		return "", err
	}
	return string(buf[:k]) + " " + string(data[:m]), nil
}

// proc is a helper process seen from the test.
type proc struct {
	t      *testing.T
	cmd    *os.Process
	sock   string
	ready  chan struct{}
	exited chan int
	stderr *lockedBuf
	conn   net.Conn
	rd     *bufio.Reader
}

// waitExit waits at most d for the helper to exit and returns its code.
func (p *proc) waitExit(d time.Duration) int {
	p.t.Helper()
	select {
	case c := <-p.exited:
		return c
	case <-time.After(d):
		p.t.Fatalf("helper still running after %v\n%s", d, p.stderr)
		return -1
	}
}

// dial connects to the helper's socket.
func (p *proc) dial() {
	p.t.Helper()
	c, err := net.Dial("unix", p.sock)
	if err != nil {
		p.t.Fatalf("dial: %v\n%s", err, p.stderr)
	}
	p.conn = c
	p.rd = bufio.NewReader(c)
}

// ask sends a command and returns the answer; ok reports "ok".
func (p *proc) ask(cmd string) (string, bool) {
	p.t.Helper()
	if p.conn == nil {
		p.dial()
	}
	p.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(p.conn, cmd); err != nil {
		p.t.Fatalf("%s: %v\n%s", cmd, err, p.stderr)
	}
	line, err := p.rd.ReadString('\n')
	if err != nil {
		p.t.Fatalf("%s: %v\n%s", cmd, err, p.stderr)
	}
	line = strings.TrimSuffix(line, "\n")
	if rest, ok := strings.CutPrefix(line, "ok "); ok {
		return rest, true
	}
	return strings.TrimPrefix(line, "err "), false
}

// must is ask that fails the test on an error answer.
func (p *proc) must(cmd string) string {
	p.t.Helper()
	out, ok := p.ask(cmd)
	if !ok {
		p.t.Fatalf("%s: %s\n%s", cmd, out, p.stderr)
	}
	return out
}
