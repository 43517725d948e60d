package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

// cVirtiofsd is Debian's C virtiofsd (QEMU 7.2), the reference.
const cVirtiofsd = "/usr/lib/qemu/virtiofsd"

// BenchmarkPerOpVsC serves the same directory with the C virtiofsd and with
// our daemon (the real binary, both as separate processes, each with its
// default options, and ours also with Kata's --thread-pool-size=1), drives
// each from this process as a guest would (testdriver, one request at a
// time), and reports per FUSE request, for LOOKUP (a new name, then its
// FORGET), GETATTR, OPEN, READ of 4 KiB, RELEASE and READDIRPLUS (100
// entries): the daemon's system calls (the daemon run under strace -c -f,
// less a run that only starts, serves INIT and stops; -v logs the
// summaries) and, in a second, untraced run, the round trip. The runs of
// one op follow one another on every daemon so that they see the same
// host load. (CPU time per request from /proc/PID/stat moved by whole
// 10 ms ticks only over these runs, too coarse to report.)
func BenchmarkPerOpVsC(b *testing.B) {
	if os.Getuid() != 0 {
		testenv.Skip(b, "the C virtiofsd needs root")
	}
	if _, err := os.Stat(cVirtiofsd); err != nil {
		testenv.Skipf(b, "no C virtiofsd: %v", err)
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		testenv.Skipf(b, "no strace: %v", err)
	}
	// NVFS_PEROP_PERF=1: the traced runs count CPU time, context switches
	// and migrations with perf stat instead of system calls with strace.
	usePerf := os.Getenv(EnvPerOpPerf) != ""
	// NVFS_PEROP_RECORD=DIR: the traced runs are profiled with perf
	// record -g into DIR/<row>-<op>.perf.data instead of counted (their
	// rows then report only the round trip).
	record, recordName := os.Getenv(EnvPerOpRecord), "base"
	// NVFS_PEROP_N: requests per row (default 2000); more gives steadier
	// figures on a shared host.
	n := 2000
	if v, err := strconv.Atoi(os.Getenv(EnvPerOpN)); err == nil && v > 0 {
		n = v
	}
	if _, err := exec.LookPath("perf"); usePerf && err != nil {
		testenv.Skipf(b, "no perf: %v", err)
	}
	share := b.TempDir()
	const files = 4000
	for i := 0; i < files; i++ {
		if err := os.WriteFile(filepath.Join(share, "f"+strconv.Itoa(i)), bytes.Repeat([]byte{'x'}, 4096), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(share, "d"), 0o755); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if err := os.WriteFile(filepath.Join(share, "d", "e"+strconv.Itoa(i)), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	// big: a directory of 1,000 entries, listed a page at a time.
	if err := os.Mkdir(filepath.Join(share, "big"), 0o755); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if err := os.WriteFile(filepath.Join(share, "big", fmt.Sprintf("entry-%04d", i)), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	bin := filepath.Join(b.TempDir(), "nydus-virtiofsd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/nydus-virtiofsd").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	daemons := []struct {
		name string
		args []string
	}{
		{"c", []string{cVirtiofsd, "-o", "source=" + share, "-o", "cache=auto"}},
		{"go", []string{bin, "--shared-dir=" + share, "--cache=auto"}},
		{"go-tps1", []string{bin, "--shared-dir=" + share, "--cache=auto", "--thread-pool-size=1"}},
	}
	// NVFS_PEROP_VARIANTS="NAME:ARG,ARG ..." adds our daemon once per
	// variant (row "go-NAME") with ARGs added to its command line, or to
	// its environment for an ARG of the form VAR=VALUE (e.g.
	// "inline:--kick-wait=inline p1:GOMAXPROCS=1"), to compare options
	// in the same run.
	for _, v := range strings.Fields(os.Getenv(EnvPerOpVariants)) {
		name, list, _ := strings.Cut(v, ":")
		var env, args []string
		for _, a := range strings.Split(list, ",") {
			switch {
			case a == "":
			case strings.HasPrefix(a, "-"):
				args = append(args, a)
			default:
				env = append(env, a)
			}
		}
		cmd := []string{bin, "--shared-dir=" + share, "--cache=auto"}
		if len(env) > 0 {
			cmd = append(append([]string{"/usr/bin/env"}, env...), cmd...)
		}
		daemons = append(daemons, struct {
			name string
			args []string
		}{"go-" + name, append(cmd, args...)})
	}
	// start runs one daemon (under strace -c -f -o file when traced: a
	// process attached to later reports nothing on these hosts) and
	// returns an initialised client and a stop function
	// returning the system calls strace counted (0 untraced).
	start := func(b *testing.B, args []string, traced bool) (*fuseclient.Client, func() counts) {
		dir, err := os.MkdirTemp("", "perop-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		sock := filepath.Join(dir, "s")
		args = append(args[:len(args):len(args)], "--socket-path="+sock)
		summary := filepath.Join(dir, "strace")
		if traced && record != "" {
			// perf record -g of each traced run, named by the daemon's
			// row and the op (recordName, set by the loop below).
			rec := []string{"perf", "record", "-q", "-g", "-o", filepath.Join(record, recordName+".perf.data")}
			if ev := os.Getenv(EnvPerOpRecordEvents); ev != "" {
				rec = append(rec, "-e", ev)
			}
			args = append(append(rec, "--"), args...)
		} else if traced && usePerf {
			args = append([]string{"perf", "stat", "-e", perfEvents, "-x", ",", "-o", summary}, args...)
		} else if traced {
			args = append([]string{strace, "-c", "-f", "-o", summary}, args...)
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		killed := false
		b.Cleanup(func() {
			if !killed {
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				cmd.Wait()
			}
		})
		// The socket's name appears at bind(2), before listen(2): until
		// then a connection is refused.
		var drv *testdriver.Driver
		for t0 := time.Now(); ; time.Sleep(20 * time.Millisecond) {
			var err error
			if _, err = os.Stat(sock); err == nil {
				drv, err = testdriver.Connect(sock, testdriver.Options{Sequence: testdriver.QEMU, RequestQueues: 1,
					QueueSize: queueSize, MemRegions: []uint64{64 << 20}})
				if err == nil {
					break
				}
				if !errors.Is(err, syscall.ECONNREFUSED) {
					b.Fatalf("%v: connect: %v", args, err)
				}
			}
			if time.Since(t0) > 10*time.Second {
				b.Fatalf("%v: no socket accepting after 10 s: %v", args, err)
			}
		}
		g := &guest{t: b, drv: drv}
		c := g.client(1, testdriver.Layout{})
		if _, err := c.Init(38, linuxInitFlags, 128<<10); err != nil {
			b.Fatalf("%v: INIT: %v", args, err)
		}
		stop := func() counts {
			drv.Close() // the daemons exit when the frontend leaves
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
				<-done
			}
			killed = true
			if !traced {
				return counts{}
			}
			if raw, err := os.ReadFile(summary); err == nil {
				b.Logf("%s:\n%s", strings.Join(args, " "), raw)
			}
			switch {
			case record != "":
				return counts{}
			case usePerf:
				return perfCounts(b, summary)
			}
			return counts{float64(straceTotal(b, summary))}
		}
		return c, stop
	}

	// Each op is set up (untimed) by prep, then run n times by run(i).
	type op struct {
		name string
		prep func(c *fuseclient.Client, n int) (run func(i int) error)
	}
	ops := []op{
		{"LOOKUP", func(c *fuseclient.Client, n int) func(int) error {
			return func(i int) error {
				e, err := c.Lookup(fuse.FUSE_ROOT_ID, "f"+strconv.Itoa(i%files))
				if err != nil {
					return err
				}
				return c.Forget(e.NodeId, 1)
			}
		}},
		{"GETATTR", func(c *fuseclient.Client, n int) func(int) error {
			e := mustLookup(b, c, "f0")
			return func(int) error { _, err := c.GetAttr(e.NodeId); return err }
		}},
		{"OPEN+RELEASE", func(c *fuseclient.Client, n int) func(int) error {
			e := mustLookup(b, c, "f1")
			return func(int) error {
				o, err := c.Open(e.NodeId, syscall.O_RDONLY)
				if err != nil {
					return err
				}
				return c.Release(e.NodeId, o.Fh)
			}
		}},
		{"READ4K", func(c *fuseclient.Client, n int) func(int) error {
			e := mustLookup(b, c, "f2")
			o, err := c.Open(e.NodeId, syscall.O_RDONLY)
			if err != nil {
				b.Fatal(err)
			}
			return func(int) error {
				d, err := c.Read(e.NodeId, o.Fh, 0, 4096)
				if err == nil && len(d) != 4096 {
					err = fmt.Errorf("READ gave %d bytes", len(d))
				}
				return err
			}
		}},
		{"READDIRPLUS", func(c *fuseclient.Client, n int) func(int) error {
			e := mustLookup(b, c, "d")
			return func(int) error {
				o, err := c.OpenDir(e.NodeId)
				if err != nil {
					return err
				}
				ents, err := c.ReadDirPlus(e.NodeId, o.Fh, 0, 32<<10)
				if err != nil {
					return err
				}
				if len(ents) < 100 {
					return fmt.Errorf("READDIRPLUS gave %d entries", len(ents))
				}
				if err := forgetListed(c, ents); err != nil {
					return err
				}
				return c.ReleaseDir(e.NodeId, o.Fh)
			}
		}},
		{"LISTDIR1000", func(c *fuseclient.Client, n int) func(int) error {
			// OPENDIR, READDIRPLUS a page (4 KiB) at a time as a Linux
			// guest asks, one BATCH_FORGET per page, RELEASEDIR: about
			// 90 requests per row.
			e := mustLookup(b, c, "big")
			return func(int) error {
				o, err := c.OpenDir(e.NodeId)
				if err != nil {
					return err
				}
				total, off := 0, uint64(0)
				for {
					ents, err := c.ReadDirPlus(e.NodeId, o.Fh, off, 4096)
					if err != nil {
						return err
					}
					if len(ents) == 0 {
						break
					}
					total += len(ents)
					off = ents[len(ents)-1].Off
					if err := forgetListed(c, ents); err != nil {
						return err
					}
				}
				if total != 1002 {
					return fmt.Errorf("listed %d entries, want 1002", total)
				}
				return c.ReleaseDir(e.NodeId, o.Fh)
			}
		}},
	}
	// Syscalls of a daemon that starts, serves INIT and stops: subtracted.
	base := map[string]counts{}
	for _, d := range daemons {
		recordName = d.name + "-base"
		_, stop := start(b, d.args, true)
		base[d.name] = stop()
	}
	for _, o := range ops {
		b.Run(o.name, func(b *testing.B) {
			for _, d := range daemons {
				// Untraced: the round trip.
				c, stop := start(b, d.args, false)
				run := o.prep(c, n)
				t0 := time.Now()
				for k := 0; k < n; k++ {
					if err := run(k); err != nil {
						b.Fatalf("%s %s: %v", d.name, o.name, err)
					}
				}
				wall := time.Since(t0)
				stop()
				// Traced: system calls, less the start/INIT/stop baseline
				// (the op's own set-up, one or two requests, stays in).
				recordName = d.name + "-" + strings.ReplaceAll(o.name, "+", "_")
				c, stop = start(b, d.args, true)
				run = o.prep(c, n)
				for k := 0; k < n; k++ {
					if err := run(k); err != nil {
						b.Fatalf("%s %s (traced): %v", d.name, o.name, err)
					}
				}
				c1, c0 := stop(), base[d.name]
				switch {
				case record != "":
				case usePerf:
					b.ReportMetric((c1[0]-c0[0])/float64(n), d.name+"-cpu-us/op")
					b.ReportMetric((c1[1]-c0[1])/float64(n), d.name+"-ctxsw/op")
					b.ReportMetric((c1[2]-c0[2])/float64(n), d.name+"-migrations/op")
				default:
					b.ReportMetric((c1[0]-c0[0])/float64(n), d.name+"-syscalls/op")
				}
				b.ReportMetric(float64(wall.Microseconds())/float64(n), d.name+"-rtt-us/op")
			}
		})
	}
}

// mustLookup looks name up in the root, failing b if it is not there.
func mustLookup(b *testing.B, c *fuseclient.Client, name string) *fuse.EntryOut {
	e, err := c.Lookup(fuse.FUSE_ROOT_ID, name)
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// forgetListed sends one BATCH_FORGET for the entries a READDIRPLUS
// looked up, as the guest's kernel does when it drops them.
func forgetListed(c *fuseclient.Client, ents []fuseclient.DirEntry) error {
	var forget [][2]uint64
	for _, en := range ents {
		if en.Entry != nil && en.Entry.NodeId != 0 && en.Name != "." && en.Name != ".." {
			forget = append(forget, [2]uint64{en.Entry.NodeId, 1})
		}
	}
	if len(forget) == 0 {
		return nil
	}
	return c.BatchForget(forget)
}

// EnvPerOpVariants lists variants of our daemon's options
// BenchmarkPerOpVsC runs besides its defaults.
const EnvPerOpVariants = "NVFS_PEROP_VARIANTS"

// EnvPerOpRecord names a directory where BenchmarkPerOpVsC writes a perf
// record -g profile of each traced run instead of counting it.
const EnvPerOpRecord = "NVFS_PEROP_RECORD"

// EnvPerOpRecordEvents, with EnvPerOpRecord, names the events perf
// record samples (e.g. "sched:sched_switch" to see which threads switch
// and from where); default its CPU clock.
const EnvPerOpRecordEvents = "NVFS_PEROP_RECORD_EVENTS"

// EnvPerOpN sets how many requests BenchmarkPerOpVsC sends per row.
const EnvPerOpN = "NVFS_PEROP_N"

// EnvPerOpPerf makes BenchmarkPerOpVsC count with perf stat (CPU time,
// context switches, migrations) instead of strace (system calls).
const EnvPerOpPerf = "NVFS_PEROP_PERF"

// perfEvents are the software events perf stat counts (hardware counters
// are not available in these VMs).
const perfEvents = "task-clock,context-switches,cpu-migrations"

// counts are a traced run's totals: the system calls (strace), or CPU
// microseconds, context switches and migrations (perf stat).
type counts [3]float64

// perfCounts reads perf stat -x , output: value,unit,event,...
func perfCounts(t testing.TB, path string) counts {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c counts
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		switch f[2] {
		case "task-clock": // milliseconds
			c[0] = v * 1000
		case "context-switches":
			c[1] = v
		case "cpu-migrations":
			c[2] = v
		}
	}
	return c
}

// straceTotal returns the total number of system calls in an strace -c
// summary file.
func straceTotal(t testing.TB, path string) int {
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		// "100.00    0.012345   1   12345   67  total" (errors may be empty)
		if len(fl) >= 4 && fl[len(fl)-1] == "total" {
			n, err := strconv.Atoi(fl[3])
			if err != nil {
				t.Fatalf("strace total line %q", sc.Text())
			}
			return n
		}
	}
	raw, _ := os.ReadFile(path)
	t.Fatalf("no total in strace's summary:\n%s", raw)
	return 0
}
