package guesttests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BackendConfig is what a backend is asked to serve.
type BackendConfig struct {
	Socket         string            // vhost-user socket to listen on (filled in by Run)
	SharedDir      string            // directory to share ("" for image backends)
	Cache          string            // auto | always | metadata | never ("" = auto)
	Xattr          bool              // enable xattrs
	ThreadPoolSize int               // 0 = the backend's default
	Vars           map[string]string // extra {NAME} substitutions for Template backends
}

// Backend is one vhost-user-fs daemon the guest checks run against: a name
// plus a function that builds the foreground command serving a BackendConfig.
type Backend struct {
	Name string
	// Probe says why the backend cannot serve on this machine (nil: it can).
	// Nil Probe means always available.
	Probe func(ctx context.Context) error
	// Command returns the command to start; Run starts it in its own
	// process group and kills only that group.
	Command func(cfg BackendConfig) (*exec.Cmd, error)
	// GuestSMP is the guest's -smp when this backend serves it, alone or
	// beside others (empty: "1"; NVFS_GUEST_SMP overrides every backend's).
	GuestSMP string
}

// CVirtiofsdPath is Debian's C virtiofsd (package qemu-system-common).
const CVirtiofsdPath = "/usr/lib/qemu/virtiofsd"

// CVirtiofsd is the reference: QEMU 7.2's C virtiofsd with its "-o" options.
// It has no cache=metadata, and cache=never is its cache=none. Keep
// --thread-pool-size at 0: on Debian 12 a pool thread dies in virtiofsd's own
// seccomp filter (sched_getaffinity from glib). Its guests run with
// "-smp 1,maxcpus=2": a "-smp 1" TCG guest elides its memory barriers and
// now and then loses a kick (docs/notifications.md), which the C virtiofsd
// never recovers from (its unmount then hangs, as it did in a CI run after
// a long workload); ours recovers it, and its guests keep "-smp 1" to test
// that.
func CVirtiofsd() Backend {
	return Backend{
		Name:     "c",
		GuestSMP: "1,maxcpus=2",
		Probe: func(context.Context) error {
			if _, err := os.Stat(CVirtiofsdPath); err != nil {
				return fmt.Errorf("C virtiofsd missing (apt-get install qemu-system-common): %w", err)
			}
			return nil
		},
		Command: func(c BackendConfig) (*exec.Cmd, error) {
			cache := c.Cache
			switch cache {
			case "", "auto":
				cache = "auto"
			case "never":
				cache = "none"
			case "always":
			default:
				return nil, fmt.Errorf("C virtiofsd has no cache=%s", c.Cache)
			}
			if c.SharedDir == "" {
				return nil, errors.New("C virtiofsd needs a shared directory")
			}
			args := []string{"--socket-path=" + c.Socket, "-o", "source=" + c.SharedDir, "-o", "cache=" + cache}
			if c.Xattr {
				args = append(args, "-o", "xattr")
			}
			if c.ThreadPoolSize > 0 {
				args = append(args, "--thread-pool-size="+strconv.Itoa(c.ThreadPoolSize))
			}
			return exec.Command(CVirtiofsdPath, args...), nil
		},
	}
}

// GoDaemon is our nydus-virtiofsd with virtiofsd's flags. bin returns the
// binary (built on first use); the probe starts it on a scratch directory
// and reports it unavailable until it creates its socket.
func GoDaemon(bin func(ctx context.Context) (string, error)) Backend {
	b := Template("go", []string{"{bin}", "--socket-path={socket}", "--shared-dir={share}", "--cache={cache}",
		"{xattr:--xattr}", "{threads:--thread-pool-size=}"})
	tmpl := b.Command
	b.Command = func(c BackendConfig) (*exec.Cmd, error) {
		p, err := bin(context.Background())
		if err != nil {
			return nil, err
		}
		c.Vars = withVar(c.Vars, "bin", p)
		return tmpl(c)
	}
	b.Probe = func(ctx context.Context) error {
		if _, err := bin(ctx); err != nil {
			return err
		}
		return probeServes(ctx, b)
	}
	return b
}

func withVar(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for mk, mv := range m {
		if mk != k {
			out[mk] = mv
		}
	}
	return out
}

// Template returns a backend running argv after substitution: {socket},
// {share}, {cache} (auto when unset) and {NAME} from cfg.Vars anywhere in an
// argument; an argument that is exactly "{xattr:ARG}" becomes ARG when
// cfg.Xattr is set and is dropped otherwise, and "{threads:PREFIX}" becomes
// PREFIX+N when cfg.ThreadPoolSize > 0. Unknown placeholders are an error.
// Image backends use Vars, e.g.
//
//	Template("go-rafs", []string{"/path/nydus-virtiofsd", "--socket-path={socket}",
//		"--bootstrap={bootstrap}", "--blob-dir={blobdir}"})
func Template(name string, argv []string) Backend {
	return Backend{
		Name: name,
		Command: func(c BackendConfig) (*exec.Cmd, error) {
			cache := c.Cache
			if cache == "" {
				cache = "auto"
			}
			vars := map[string]string{"socket": c.Socket, "share": c.SharedDir, "cache": cache}
			for k, v := range c.Vars {
				vars[k] = v
			}
			var out []string
			for _, a := range argv {
				if v, ok := strings.CutPrefix(a, "{xattr:"); ok && strings.HasSuffix(v, "}") {
					if c.Xattr {
						out = append(out, strings.TrimSuffix(v, "}"))
					}
					continue
				}
				if v, ok := strings.CutPrefix(a, "{threads:"); ok && strings.HasSuffix(v, "}") {
					if c.ThreadPoolSize > 0 {
						out = append(out, strings.TrimSuffix(v, "}")+strconv.Itoa(c.ThreadPoolSize))
					}
					continue
				}
				s, err := expand(a, vars)
				if err != nil {
					return nil, fmt.Errorf("backend %s: %w", name, err)
				}
				out = append(out, s)
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("backend %s: empty command", name)
			}
			return exec.Command(out[0], out[1:]...), nil
		},
	}
}

func expand(s string, vars map[string]string) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("unclosed placeholder in %q", s)
		}
		name := s[i+1 : i+j]
		v, ok := vars[name]
		if !ok {
			return "", fmt.Errorf("no value for {%s}", name)
		}
		b.WriteString(s[:i])
		b.WriteString(v)
		s = s[i+j+1:]
	}
}

// probeServes starts b on an empty scratch directory and waits (at most 5 s)
// for its socket; then it stops the backend again.
func probeServes(ctx context.Context, b Backend) error {
	dir, err := os.MkdirTemp("/tmp", "nvfs-probe.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	share := filepath.Join(dir, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		return err
	}
	sock := filepath.Join(dir, "s.sock")
	cmd, err := b.Command(BackendConfig{Socket: sock, SharedDir: share, Cache: "auto"})
	if err != nil {
		return err
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		if isSocket(sock) {
			return nil
		}
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("%s exited without creating its socket (%v): %s", cmd.Path, err, lastLines(out.String(), 3))
		case <-ctx.Done():
			return fmt.Errorf("%s did not create its socket within 5 s: %s", cmd.Path, lastLines(out.String(), 3))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func isSocket(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&os.ModeSocket != 0
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
