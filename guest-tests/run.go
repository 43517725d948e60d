package guesttests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

// QEMU is the emulator the guests run in (package qemu-system-x86).
const QEMU = "qemu-system-x86_64"

// RunOptions describe one guest boot against one backend.
type RunOptions struct {
	Guest   *Guest
	Backend Backend
	Serve   BackendConfig // Socket is filled in by Run
	Config  check.Config  // the guest's steps; Tag defaults to "nvfs"
	Timeout time.Duration // whole run, default 120 s
	MemMiB  int           // guest RAM, default 1024
	LogDir  string        // where serial.log, backend.log, qemu.log go (default: a new temp dir, kept)
	Console io.Writer     // if set, every serial line is copied here
	Stdin   io.Reader     // if set, the guest console's input (KindShell)
	Append  string        // extra kernel command line
	// SocketWait bounds the wait for the backend's socket (default 10 s).
	SocketWait time.Duration
	// BeforeGuest, if set, runs once the backend's socket exists and
	// before QEMU starts (e.g. the API mounts a Kata runtime makes).
	BeforeGuest func(ctx context.Context) error
	Log         logrus.FieldLogger
	// Extra are more backends serving the same guest, each on its own
	// socket and virtio-fs device (Tag); the guest mounts them as
	// Config.Extra says. They are started before QEMU and stopped after
	// it, and their logs go to LogDir/backend-TAG.log.
	Extra []ExtraBackend
}

// ExtraBackend is one more daemon serving a guest (RunOptions.Extra).
type ExtraBackend struct {
	Backend Backend
	Serve   BackendConfig // Socket is filled in by Run
	Tag     string
}

// RunResult is what a boot produced. Logs stay in LogDir.
type RunResult struct {
	Results     []check.Result
	GuestRC     int  // from "@@END rc=N"
	Ended       bool // the guest printed its END line
	BackendExit int  // exit code (-1: killed by a signal)
	// BackendExitedAlone is true when the backend exited by itself after
	// QEMU quit (the daemon exits when the frontend disconnects).
	BackendExitedAlone bool
	// Events maps each "@@HARNESS EVENT" to the host time since QEMU started.
	Events map[string]time.Duration
	Wall   time.Duration // QEMU start to QEMU exit
	LogDir string
	// BackendPid and QEMUPid are the process (group) ids Run started (0: not started).
	BackendPid, QEMUPid int
	// BackendCPU is the user and system CPU time the backend's process
	// used (with the children it waited for), once it has exited.
	BackendCPU time.Duration
	// ExtraCPU is the same for each of RunOptions.Extra.
	ExtraCPU []time.Duration
}

// Result returns the result of the named step, or nil.
func (r *RunResult) Result(step string) *check.Result {
	for i := range r.Results {
		if r.Results[i].Step == step {
			return &r.Results[i]
		}
	}
	return nil
}

// Tails returns the last n lines of each log, for failure messages.
func (r *RunResult) Tails(n int) string {
	var b strings.Builder
	for _, f := range []string{"serial.log", "backend.log", "qemu.log"} {
		d, _ := os.ReadFile(filepath.Join(r.LogDir, f))
		fmt.Fprintf(&b, "--- %s (last %d lines) ---\n%s\n", filepath.Join(r.LogDir, f), n, lastLines(string(d), n))
	}
	return b.String()
}

// Run starts the backend, waits for its socket, boots QEMU with the guest
// and the step configuration, collects the results from the serial console
// and shuts everything down. It kills only the process groups it started.
// The error covers setup failures, timeouts, a backend dying while QEMU
// runs and a guest that never reported its end; the RunResult (with
// LogDir) is returned in every case where something was started.
func Run(ctx context.Context, o RunOptions) (*RunResult, error) {
	if o.Timeout == 0 {
		o.Timeout = 120 * time.Second
	}
	if o.SocketWait == 0 {
		o.SocketWait = 10 * time.Second
	}
	if o.MemMiB == 0 {
		o.MemMiB = 1024
	}
	if o.Config.Tag == "" {
		o.Config.Tag = "nvfs"
	}
	o.Extra = slices.Clone(o.Extra) // their sockets are filled in here
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.LogDir == "" {
		d, err := os.MkdirTemp("", "nvfs-guest-logs.")
		if err != nil {
			return nil, err
		}
		o.LogDir = d
	} else if err := os.MkdirAll(o.LogDir, 0o755); err != nil {
		return nil, err
	}
	res := &RunResult{LogDir: o.LogDir, BackendExit: -1, Events: map[string]time.Duration{}}
	// unix socket paths are limited to 107 bytes: keep the socket in /tmp
	rundir, err := os.MkdirTemp("/tmp", "nvfs.")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(rundir)
	o.Serve.Socket = filepath.Join(rundir, "vfs.sock")

	initrd, err := runInitrd(o, rundir)
	if err != nil {
		return res, err
	}

	// ---- backend
	bp, err := startBackend(o.Backend, o.Serve, o.LogDir, "backend", func(code int, cpu time.Duration) {
		res.BackendExit, res.BackendCPU = code, cpu
	})
	if err != nil {
		return res, err
	}
	res.BackendPid = bp.pid
	bdone := bp.done
	killBackend := bp.stop
	defer killBackend()
	if err := waitSocket(ctx, o.Serve.Socket, bdone, o.SocketWait); err != nil {
		return res, fmt.Errorf("backend %s: %w\n%s", o.Backend.Name, err, res.Tails(20))
	}
	res.ExtraCPU = make([]time.Duration, len(o.Extra))
	for i := range o.Extra {
		stop, err := startExtra(ctx, o, rundir, i, res)
		if err != nil {
			return res, err
		}
		defer stop()
	}
	if o.BeforeGuest != nil {
		if err := o.BeforeGuest(ctx); err != nil {
			return res, fmt.Errorf("backend %s: before the guest: %w\n%s", o.Backend.Name, err, res.Tails(20))
		}
	}

	// ---- QEMU
	qargs := qemuArgs(o, initrd)
	_ = os.WriteFile(filepath.Join(o.LogDir, "qemu-cmd.txt"), []byte(QEMU+" "+strings.Join(qargs, " ")+"\n"), 0o644)
	qcmd := exec.Command(QEMU, qargs...)
	qlog, err := os.Create(filepath.Join(o.LogDir, "qemu.log"))
	if err != nil {
		return res, err
	}
	defer qlog.Close()
	qcmd.Stderr = qlog
	qcmd.Stdin = o.Stdin
	serial, err := qcmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	qcmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	if err := qcmd.Start(); err != nil {
		return res, fmt.Errorf("start %s: %w", QEMU, err)
	}
	res.QEMUPid = qcmd.Process.Pid
	var readErr error
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		readErr = readSerial(serial, filepath.Join(o.LogDir, "serial.log"), t0, o.Console, res)
	}()
	qdone := make(chan struct{})
	go func() {
		rwg.Wait() // all of stdout read before Wait closes the pipe
		_ = qcmd.Wait()
		close(qdone)
	}()
	killQEMU := func() { stopGroup(qcmd.Process.Pid, qdone, 3*time.Second) }
	var failure error
	backendFirst := false
	deadline := time.NewTimer(o.Timeout)
	defer deadline.Stop()
	bd := bdone
wait:
	for {
		select {
		case <-qdone:
			break wait
		case <-bd:
			// Normal at power-off (the socket closes before QEMU has
			// exited); otherwise the guest's FUSE requests hang forever:
			// give QEMU 3 s to finish on its own either way.
			bd = nil
			backendFirst = true
			deadline.Reset(3 * time.Second)
		case <-deadline.C:
			killQEMU()
			if !backendFirst {
				failure = fmt.Errorf("timeout after %s", o.Timeout)
			}
			break wait
		case <-ctx.Done():
			failure = ctx.Err()
			killQEMU()
			break wait
		}
	}
	res.Wall = time.Since(t0)
	// the backend should exit by itself once QEMU has closed the socket
	select {
	case <-bdone:
		res.BackendExitedAlone = failure == nil
	case <-time.After(5 * time.Second):
		o.Log.Warnf("backend %s still running 5 s after QEMU quit: stopping it", o.Backend.Name)
	}
	killBackend()
	if failure == nil && backendFirst && !res.Ended {
		failure = fmt.Errorf("backend %s exited (code %d) while the guest was running", o.Backend.Name, res.BackendExit)
	}
	if failure == nil && readErr != nil {
		failure = fmt.Errorf("reading the serial console: %w", readErr)
	}
	if failure == nil && !res.Ended {
		failure = errors.New("the guest never printed its END line")
	}
	if failure != nil {
		return res, fmt.Errorf("%s: %w\n%s", o.Backend.Name, failure, res.Tails(25))
	}
	return res, nil
}

// backendProc is a daemon Run started in its own process group.
type backendProc struct {
	pid  int
	done chan struct{} // closed once it has exited
	log  *os.File
}

// startBackend starts b serving serve, its output in logDir/name.log and
// its command line in logDir/name-cmd.txt; exited gets its exit code and
// CPU time (with the children it waited for) before done is closed.
func startBackend(b Backend, serve BackendConfig, logDir, name string, exited func(code int, cpu time.Duration)) (*backendProc, error) {
	cmd, err := b.Command(serve)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", b.Name, err)
	}
	log, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	_ = os.WriteFile(filepath.Join(logDir, name+"-cmd.txt"), []byte(strings.Join(cmd.Args, " ")+"\n"), 0o644)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start backend %s: %w", b.Name, err)
	}
	p := &backendProc{pid: cmd.Process.Pid, done: make(chan struct{}), log: log}
	go func() {
		_ = cmd.Wait()
		exited(cmd.ProcessState.ExitCode(), cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
		close(p.done)
	}()
	return p, nil
}

// stop ends the daemon's process group unless it has exited (SIGTERM, then
// SIGKILL after 2 s) and closes its log.
func (p *backendProc) stop() {
	stopGroup(p.pid, p.done, 2*time.Second)
	p.log.Close()
}

// startExtra starts o.Extra[i] on its own socket in rundir and waits for
// the socket; stop ends it and records its CPU time in res.ExtraCPU[i].
func startExtra(ctx context.Context, o RunOptions, rundir string, i int, res *RunResult) (stop func(), err error) {
	e := &o.Extra[i]
	e.Serve.Socket = filepath.Join(rundir, fmt.Sprintf("vfs-%d.sock", i))
	p, err := startBackend(e.Backend, e.Serve, o.LogDir, "backend-"+e.Tag, func(_ int, cpu time.Duration) { res.ExtraCPU[i] = cpu })
	if err != nil {
		return nil, err
	}
	stop = func() {
		// Called once QEMU has quit (or failed to start): a daemon exits
		// by itself when its frontend disconnects, and only then has it
		// reaped its children (the C virtiofsd's sandboxed worker), whose
		// CPU time ExtraCPU counts.
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		p.stop()
	}
	if err := waitSocket(ctx, e.Serve.Socket, p.done, o.SocketWait); err != nil {
		stop()
		return nil, fmt.Errorf("backend %s (%s): %w", e.Backend.Name, e.Tag, err)
	}
	return stop, nil
}

// stopGroup ends the process group pgid (one this package started) unless
// done is already closed: SIGTERM, then SIGKILL after grace.
// Members left behind by a leader that has exited get SIGKILL.
func stopGroup(pgid int, done <-chan struct{}, grace time.Duration) {
	select {
	case <-done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // stragglers (ESRCH when none)
}

// runInitrd writes the base initramfs plus a cpio with the configuration.
func runInitrd(o RunOptions, rundir string) (string, error) {
	cfg, err := json.Marshal(o.Config)
	if err != nil {
		return "", err
	}
	ov, err := overlayCPIO(map[string][]byte{strings.TrimPrefix(check.ConfigPath, "/"): cfg})
	if err != nil {
		return "", err
	}
	base, err := os.ReadFile(o.Guest.Initramfs)
	if err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	p := filepath.Join(rundir, "initrd.img")
	if err := os.WriteFile(p, append(base, ov...), 0o644); err != nil {
		return "", err
	}
	return p, nil
}

// EnvGuestSMP overrides the guests' -smp argument (default 1, or what a
// backend asks for: Backend.GuestSMP), e.g. "1,maxcpus=2": one vCPU, but
// TCG then keeps the guest's memory barriers (docs/notifications.md).
const EnvGuestSMP = "NVFS_GUEST_SMP"

// guestSMP is the -smp of a guest served by o's backends.
func guestSMP(o RunOptions) string {
	if s := os.Getenv(EnvGuestSMP); s != "" {
		return s
	}
	smp := "1"
	if o.Backend.GuestSMP != "" {
		smp = o.Backend.GuestSMP
	}
	for _, e := range o.Extra {
		if e.Backend.GuestSMP != "" {
			smp = e.Backend.GuestSMP
		}
	}
	return smp
}

func qemuArgs(o RunOptions, initrd string) []string {
	mem := strconv.Itoa(o.MemMiB) + "M"
	smp := guestSMP(o)
	args := []string{
		"-machine", "q35,accel=tcg,memory-backend=mem", "-smp", smp, "-m", mem,
		// vhost-user needs guest RAM the backend can map: memfd, share=on
		"-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-chardev", "socket,id=vfs,path=" + o.Serve.Socket,
		"-device", "vhost-user-fs-pci,chardev=vfs,tag=" + o.Config.Tag + ",queue-size=1024",
	}
	for i, e := range o.Extra {
		id := fmt.Sprintf("vfs%d", i)
		args = append(args, "-chardev", "socket,id="+id+",path="+e.Serve.Socket,
			"-device", "vhost-user-fs-pci,chardev="+id+",tag="+e.Tag+",queue-size=1024")
	}
	return append(args,
		"-kernel", o.Guest.Kernel, "-initrd", initrd,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 quiet "+o.Append),
		"-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
	)
}

func waitSocket(ctx context.Context, sock string, dead <-chan struct{}, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for !isSocket(sock) {
		select {
		case <-dead:
			return errors.New("exited before creating its socket")
		case <-ctx.Done():
			return fmt.Errorf("no socket %s after %s", sock, limit)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// readSerial copies the console to serial.log (each line prefixed with the
// host time since QEMU started) and to console, and parses the markers.
func readSerial(r io.Reader, logPath string, t0 time.Time, console io.Writer, res *RunResult) error {
	f, err := os.Create(logPath)
	if err != nil {
		_, _ = io.Copy(io.Discard, r)
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	defer w.Flush()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var firstErr error
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		el := time.Since(t0)
		fmt.Fprintf(w, "%7.3f %s\n", el.Seconds(), line)
		if console != nil {
			fmt.Fprintln(console, line)
		}
		if ev, ok := strings.CutPrefix(line, check.MarkHarness); ok {
			name, _, _ := strings.Cut(ev, " ")
			if _, seen := res.Events[name]; !seen {
				res.Events[name] = el
			}
			continue
		}
		r, rc, end, err := check.ParseLine(line)
		switch {
		case err != nil:
			if firstErr == nil {
				firstErr = err
			}
		case r != nil:
			res.Results = append(res.Results, *r)
		case end:
			res.Ended, res.GuestRC = true, rc
		}
	}
	if err := sc.Err(); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}
