// Command guestinit is PID 1 of the guest-tests initramfs. It must be built
// statically (CGO_ENABLED=0). It mounts proc, sys and devtmpfs, loads the
// kernel modules listed in /lib/modules/load-order with finit_module, mounts
// the virtio-fs tag named in /harness/config.json, runs the configured steps
// (package check), prints one "@@RESULT {json}" line per step on the console,
// unmounts under a watchdog, prints "@@END rc=N" and powers off.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == watchdogArg {
		watchdog()
		return
	}
	if len(os.Args) > 1 && os.Args[1] == soakWorkerArg {
		soakWorker()
		return
	}
	rc := run()
	unix.Sync()
	fmt.Printf("%s%d\n", check.MarkEnd, rc)
	_ = os.Stdout.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// not reached; if it is, PID 1 exiting panics the kernel and
	// panic=-1 with -no-reboot ends QEMU
	os.Exit(rc)
}

// mark prints a progress line with the guest's uptime.
func mark(event string, kv ...string) {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	fmt.Printf("%s%s %s uptime=%.3f\n", check.MarkHarness, event, strings.Join(kv, " "),
		float64(ts.Sec)+float64(ts.Nsec)/1e9)
}

func run() int {
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			fmt.Printf("mount %s: %v\n", m.dst, err)
		}
	}
	reopenConsole()
	mark("INIT_START")
	if err := loadModules("/lib/modules"); err != nil {
		mark("MODULE_FAIL", fmt.Sprintf("err=%q", err.Error()))
		return 3
	}
	mark("MODULES_LOADED")

	cfg, err := readConfig(check.ConfigPath)
	if err != nil {
		fmt.Println(err)
		return 2
	}
	// The config's tag at its mount point, then its extra devices'.
	mounts := append([]check.ExtraMount{{Tag: cfg.Tag, Mount: cfg.Mount}}, cfg.Extra...)
	for _, m := range mounts {
		if err := mountShare(m.Tag, m.Mount, cfg.Opts); err != nil {
			mark("MOUNT_FAILED", fmt.Sprintf("err=%q", err.Error()))
			dumpKernelLog(10)
			return 4
		}
	}
	wd := startWatchdog()
	stepTimeout := cfg.StepTimeoutSec
	if stepTimeout <= 0 {
		stepTimeout = 60
	}
	rc := 0
	for _, st := range cfg.Steps {
		wd.arm(stepTimeout, st.Name)
		r := runStep(cmp.Or(st.Mount, cfg.Mount), st)
		wd.arm(0, "")
		line, _ := json.Marshal(r)
		fmt.Printf("%s%s\n", check.MarkResult, line)
		if !r.OK {
			rc = 1
		}
	}
	for _, m := range slices.Backward(mounts) {
		if err := unmount(m.Mount, time.Duration(cfg.UmountTimeoutSec)*time.Second); err != nil {
			fmt.Println(err)
			if rc == 0 {
				rc = 5
			}
		}
	}
	return rc
}

// reopenConsole points stdin/stdout/stderr at /dev/console (the kernel
// opens it for PID 1 only when the node is in the initramfs).
func reopenConsole() {
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	for i := 0; i <= 2; i++ {
		_ = unix.Dup3(fd, i, 0)
	}
	_ = unix.Close(fd)
}

func loadModules(dir string) error {
	f, err := os.Open(filepath.Join(dir, "load-order"))
	if err != nil {
		return fmt.Errorf("modules: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		name := strings.TrimSpace(s.Text())
		if name == "" {
			continue
		}
		mf, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("module %s: %w", name, err)
		}
		err = unix.FinitModule(int(mf.Fd()), "", 0)
		mf.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("finit_module %s: %w", name, err)
		}
	}
	return s.Err()
}

func readConfig(p string) (*check.Config, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var c check.Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("config %s: %w", p, err)
	}
	if c.Mount == "" {
		c.Mount = "/mnt"
	}
	return &c, nil
}

// mountShare mounts tag at mnt and waits for the first FUSE round trip:
// mount(2) returns before the backend has answered FUSE_INIT.
func mountShare(tag, mnt, opts string) error {
	var flags uintptr
	var data []string
	for _, o := range strings.Split(opts, ",") {
		switch o {
		case "":
		case "ro":
			flags |= unix.MS_RDONLY
		case "rw":
		default:
			data = append(data, o)
		}
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(tag, mnt, "virtiofs", flags, strings.Join(data, ",")); err != nil {
		return fmt.Errorf("mount -t virtiofs %s %s: %w", tag, mnt, err)
	}
	mark("MOUNTED", "tag="+tag, "opts="+opts)
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return fmt.Errorf("stat of the mount root: %w", err)
	}
	mark("READY")
	return nil
}

func runStep(mnt string, st check.Step) (r check.Result) {
	r = check.Result{Step: st.Name, Kind: st.Kind}
	t0 := time.Now()
	defer func() {
		if p := recover(); p != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("panic: %v", p))
		}
		if r.Metrics == nil {
			r.Metrics = map[string]float64{}
		}
		r.Metrics["secs"] = time.Since(t0).Seconds()
		r.OK = len(r.Errors) == 0
	}()
	dir := filepath.Join(mnt, st.Dir)
	switch st.Kind {
	case check.KindManifest:
		r.Errors, r.Metrics = compareTree(dir, st)
	case check.KindMutate:
		if err := check.Mutate(dir); err != nil {
			r.Errors = []string{err.Error()}
			return r
		}
		if st.Manifest != nil {
			// what the guest sees must already be the expected state,
			// also after its caches are gone
			r.Errors, r.Metrics = compareTree(dir, st)
			if len(r.Errors) == 0 {
				_ = check.DropCaches()
				r.Errors, _ = compareTree(dir, st)
			}
		}
	case check.KindXattr:
		r.Errors = check.XattrOps(dir)
	case check.KindReadOnly:
		file := ""
		if st.File != "" {
			file = filepath.Join(mnt, st.File)
		}
		r.Errors = check.ReadOnlyOps(dir, file)
	case check.KindReread:
		m, err := check.Reread(filepath.Join(mnt, st.File), st.Reps, st.Cache)
		r.Metrics = m
		if err != nil {
			r.Errors = []string{err.Error()}
		}
	case check.KindSeqRead:
		m, err := check.SeqRead(filepath.Join(mnt, st.File), st.Reps)
		r.Metrics = m
		if err != nil {
			r.Errors = []string{err.Error()}
		}
	case check.KindStatWalk:
		m, err := check.StatWalk(dir, st.Reps)
		r.Metrics = m
		if err != nil {
			r.Errors = []string{err.Error()}
		}
	case check.KindMetaRead:
		m, err := check.MetaRead(dir, st.Reps)
		r.Metrics = m
		if err != nil {
			r.Errors = []string{err.Error()}
		}
	case check.KindPaired:
		m, err := check.PairedWorkloads(st.Mounts, st.File, st.Dir, st.Reps)
		r.Metrics = m
		if err != nil {
			r.Errors = []string{err.Error()}
		}
	case check.KindSoak:
		r.Errors, r.Metrics = runSoak(mnt, st)
	case check.KindOverlay:
		r.Errors = check.OverlayOps(filepath.Join(mnt, st.Lower), dir, "/ovl")
	case check.KindDemo:
		file := ""
		if st.File != "" {
			file = filepath.Join(mnt, st.File)
		}
		if err := check.Demo(os.Stdout, dir, file); err != nil {
			r.Errors = []string{err.Error()}
		}
	case check.KindExec:
		if len(st.Argv) == 0 {
			r.Errors = []string{"exec: no argv"}
			return r
		}
		cmd := exec.Command(st.Argv[0], st.Argv[1:]...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, os.Stdout, os.Stdout
		if err := cmd.Run(); err != nil {
			r.Errors = []string{fmt.Sprintf("%v: %v", st.Argv, err)}
		}
	case check.KindShell:
		fmt.Printf("guest shell in %s; exit it to unmount and power off\n", dir)
		cmd := exec.Command("/bin/sh")
		cmd.Dir, cmd.Stdin, cmd.Stdout, cmd.Stderr = dir, os.Stdin, os.Stdout, os.Stdout
		cmd.Env = []string{"PATH=/bin", "HOME=/", "TERM=dumb", "PS1=guest# "}
		if err := cmd.Run(); err != nil {
			r.Errors = []string{fmt.Sprintf("shell: %v", err)}
		}
	default:
		r.Errors = []string{fmt.Sprintf("unknown step kind %q", st.Kind)}
	}
	return r
}

func compareTree(dir string, st check.Step) ([]string, map[string]float64) {
	if st.Manifest == nil {
		return []string{"no manifest"}, nil
	}
	t0 := time.Now()
	got, stats, err := check.Build(dir, st.Build)
	secs := time.Since(t0).Seconds()
	if err != nil {
		return []string{err.Error()}, nil
	}
	m := map[string]float64{
		"entries": float64(stats.Entries), "files": float64(stats.Files), "bytes": float64(stats.Bytes),
		"walk_secs": secs,
	}
	return check.Compare(st.Manifest, got, st.Compare), m
}

// unmount syncs and unmounts with a watchdog: virtiofs's umount waits for
// every in-flight request, so a lost completion would hang it forever.
func unmount(mnt string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	unix.Sync()
	done := make(chan error, 1)
	go func() { done <- unix.Unmount(mnt, 0) }()
	select {
	case err := <-done:
		if err != nil {
			mark("UMOUNT_FAILED", fmt.Sprintf("err=%q", err.Error()))
			return fmt.Errorf("umount %s: %w", mnt, err)
		}
		mark("UMOUNTED")
		return nil
	case <-time.After(timeout):
		mark("UMOUNT_HUNG")
		_ = os.WriteFile("/proc/sysrq-trigger", []byte("w"), 0)
		time.Sleep(500 * time.Millisecond)
		dumpKernelLog(60)
		return fmt.Errorf("umount %s: still blocked after %s", mnt, timeout)
	}
}

// dumpKernelLog prints the kernel log from its last "sysrq:" line on (the
// blocked-task dump), or else its last n lines.
func dumpKernelLog(n int) {
	buf := make([]byte, 1<<20)
	k, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(buf[:k]), "\n"), "\n")
	from := max(len(lines)-n, 0)
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "sysrq: ") {
			from = i
			break
		}
	}
	for _, l := range lines[from:min(len(lines), from+400)] {
		if !strings.Contains(l, "drop_caches") {
			fmt.Printf("%sDMESG %s\n", check.MarkHarness, l)
		}
	}
}

// watchdogArg makes /init the watchdog process. The checks block in raw
// system calls (see package check), so no goroutine of the main process
// can run while a FUSE request hangs; a second process can.
const watchdogArg = "watchdog"

// watchdogPipe is the main process's end of the watchdog's stdin.
type watchdogPipe struct{ w *os.File }

// startWatchdog starts "/init watchdog" with a pipe on its stdin.
func startWatchdog() watchdogPipe {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Println("watchdog:", err)
		return watchdogPipe{}
	}
	cmd := exec.Command("/proc/self/exe", watchdogArg)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, os.Stdout, os.Stdout
	if err := cmd.Start(); err != nil {
		fmt.Println("watchdog:", err)
		return watchdogPipe{}
	}
	r.Close()
	return watchdogPipe{w: w}
}

// arm tells the watchdog that step name has secs seconds (0: disarm).
func (p watchdogPipe) arm(secs int, name string) {
	if p.w != nil {
		fmt.Fprintf(p.w, "%d %s\n", secs, name)
	}
}

// watchdog reads "secs name" lines; when an armed step outlives its time it
// prints STEP_HUNG and the blocked tasks (sysrq-w), once per arming.
func watchdog() {
	type armed struct {
		secs int
		name string
	}
	lines := make(chan armed)
	go func() {
		s := bufio.NewScanner(os.Stdin)
		for s.Scan() {
			var a armed
			if _, err := fmt.Sscanf(s.Text(), "%d %s", &a.secs, &a.name); err != nil {
				a = armed{}
			}
			lines <- a
		}
		close(lines)
	}()
	var timer <-chan time.Time
	cur := ""
	for {
		select {
		case a, ok := <-lines:
			if !ok {
				return
			}
			timer, cur = nil, a.name
			if a.secs > 0 {
				timer = time.After(time.Duration(a.secs) * time.Second)
			}
		case <-timer:
			timer = nil
			mark("STEP_HUNG", "step="+cur)
			_ = os.WriteFile("/proc/sysrq-trigger", []byte("w"), 0)
			time.Sleep(500 * time.Millisecond)
			dumpKernelLog(40)
		}
	}
}
