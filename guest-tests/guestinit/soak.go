package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

// soakWorkerArg makes /init one soak worker: it reads a soakJob (JSON) on
// stdin, runs check.RunSoakWorker and prints its check.SoakStats (JSON).
const soakWorkerArg = "soakworker"

// soakJob is what the soak step hands each worker process.
type soakJob struct {
	Dir      string          `json:"dir"`
	Read     string          `json:"read"`
	Manifest *check.Manifest `json:"manifest"`
	ID       int             `json:"id"`
	Secs     float64         `json:"secs"`
}

func soakWorker() {
	var j soakJob
	st := check.SoakStats{}
	if err := json.NewDecoder(os.Stdin).Decode(&j); err != nil {
		st.Errors = []string{"soak worker: " + err.Error()}
	} else {
		st = check.RunSoakWorker(j.Dir, j.Read, j.Manifest, j.ID, time.Now().Add(time.Duration(j.Secs*float64(time.Second))))
	}
	_ = json.NewEncoder(os.Stdout).Encode(st)
}

// runSoak is a KindSoak step: wait for the host's mounts, the baseline
// handshake, Workers worker processes for DurationSec with a cache drop
// half-way, checks that each worker's directory holds only its journal, a
// cache drop (the guest forgets what it looked up), the after handshake.
func runSoak(mnt string, st check.Step) ([]string, map[string]float64) {
	p := st.Soak
	if p == nil || p.Workers < 1 || p.DurationSec < 1 {
		return []string{"soak: want Soak.Workers and Soak.DurationSec"}, nil
	}
	dir := filepath.Join(mnt, st.Dir)
	read := ""
	if p.Read != "" {
		read = filepath.Join(mnt, p.Read)
	}
	wait := time.Duration(max(p.WaitSec, 30)) * time.Second
	for _, d := range []string{dir, read} {
		if d == "" {
			continue
		}
		if err := waitDir(d, wait); err != nil {
			return []string{err.Error()}, nil
		}
	}
	console := bufio.NewReader(os.Stdin)
	_ = check.DropCaches()
	if p.Handshake {
		if err := handshake(console, check.SoakBaseline); err != nil {
			return []string{err.Error()}, nil
		}
	}
	t0 := time.Now()
	type out struct {
		st  check.SoakStats
		err error
	}
	outs := make(chan out, p.Workers)
	for i := range p.Workers {
		job, _ := json.Marshal(soakJob{Dir: dir, Read: read, Manifest: st.Manifest, ID: i, Secs: float64(p.DurationSec)})
		go func() {
			cmd := exec.Command("/proc/self/exe", soakWorkerArg)
			cmd.Stdin = bytes.NewReader(job)
			var stdout bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, os.Stdout
			var o out
			if err := cmd.Run(); err != nil {
				o.err = fmt.Errorf("worker %d: %w", i, err)
			} else if err := json.Unmarshal(stdout.Bytes(), &o.st); err != nil {
				o.err = fmt.Errorf("worker %d: %w: %q", i, err, stdout.String())
			}
			outs <- o
		}()
	}
	mark("SOAK_STARTED", fmt.Sprintf("workers=%d", p.Workers), fmt.Sprintf("secs=%d", p.DurationSec))
	time.Sleep(time.Duration(p.DurationSec) * time.Second / 2)
	dropErr := check.DropCaches()
	mark("SOAK_DROPPED_CACHES")
	var all check.SoakStats
	var errs check.Errs
	if dropErr != nil {
		errs.Addf("drop caches: %v", dropErr)
	}
	for range p.Workers {
		o := <-outs
		if o.err != nil {
			errs.Addf("%v", o.err)
			continue
		}
		all.Merge(&o.st)
	}
	secs := time.Since(t0).Seconds()
	for _, e := range all.Errors {
		errs.Addf("%s", e)
	}
	for i := range p.Workers {
		wd := filepath.Join(dir, fmt.Sprintf("w%d", i))
		f, err := os.Open(wd)
		if err != nil {
			errs.Addf("%v", err)
			continue
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil || len(names) != 1 || names[0] != check.SoakJournal {
			errs.Addf("%s holds %v (%v), want only %s", wd, names, err, check.SoakJournal)
		}
	}
	unix.Sync()
	_ = check.DropCaches()
	m := map[string]float64{
		"workload_secs": secs, "rounds": float64(all.Rounds), "ops": float64(all.Lat.Count()),
		"p50_us": all.Lat.Quantile(0.5), "p99_us": all.Lat.Quantile(0.99), "max_us": all.Lat.Quantile(1),
	}
	names := make([]string, 0, len(all.Ops))
	for k := range all.Ops {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		m["ops_"+k] = float64(all.Ops[k])
		if h := all.OpLat[k]; h != nil {
			m["p99_us_"+k] = h.Quantile(0.99)
		}
	}
	if p.Handshake {
		if err := handshake(console, check.SoakAfter); err != nil {
			errs.Addf("%v", err)
		}
	}
	return errs.Strings(), m
}

// waitDir waits for d to be a directory (a mount the host makes through
// the daemon's API while the guest boots).
func waitDir(d string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		fi, err := os.Stat(d)
		if err == nil && fi.IsDir() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("soak: %s did not appear within %s: %v", d, limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// handshake prints the event and waits (bounded) for the host's line on
// the console.
func handshake(console *bufio.Reader, event string) error {
	mark(event)
	got := make(chan string, 1)
	go func() {
		l, _ := console.ReadString('\n')
		got <- strings.TrimSpace(l)
	}()
	select {
	case l := <-got:
		if l != "go" {
			return fmt.Errorf("soak %s: the host answered %q", event, l)
		}
		return nil
	case <-time.After(60 * time.Second):
		return fmt.Errorf("soak %s: no answer from the host within 60 s", event)
	}
}
