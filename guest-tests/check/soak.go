package check

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// KindSoak is the guest soak (issue 13): Workers processes run SoakRound
// in a loop over Dir (a writable share) for DurationSec, reading the files
// of Read (a read-only image, checked against Manifest) between rounds,
// with a cache drop half-way; the host samples the daemon before and after
// (SoakParams.Handshake).
const KindSoak = "soak"

// SoakParams configure a KindSoak step (Step.Soak).
type SoakParams struct {
	Workers     int `json:"workers"`
	DurationSec int `json:"duration_sec"`
	// Read is a directory (relative to the mount point) of a read-only
	// image whose files (Manifest, with checksums) each round reads.
	Read string `json:"read,omitempty"`
	// Wait is how long the guest waits for Dir and Read to appear (the
	// host mounts them through the daemon's API); default 30 s.
	WaitSec int `json:"wait_sec,omitempty"`
	// Handshake: before and after the workload the guest prints
	// "@@HARNESS SOAK_BASELINE" / "SOAK_AFTER" and waits for a line on
	// its console (the host's "go" once it has sampled the daemon).
	Handshake bool `json:"handshake,omitempty"`
}

// Soak handshake events.
const (
	SoakBaseline = "SOAK_BASELINE"
	SoakAfter    = "SOAK_AFTER"
)

// LatHist is a latency histogram with power-of-two microsecond buckets:
// bucket i counts latencies in [2^(i-1), 2^i) µs (bucket 0: under 1 µs).
type LatHist [32]uint64

// Add records one latency.
func (h *LatHist) Add(d time.Duration) {
	us := uint64(d / time.Microsecond)
	i := min(bits.Len64(us), len(h)-1)
	h[i]++
}

// Merge adds o into h.
func (h *LatHist) Merge(o *LatHist) {
	for i := range h {
		h[i] += o[i]
	}
}

// Count is the number of latencies recorded.
func (h *LatHist) Count() uint64 {
	var n uint64
	for _, c := range h {
		n += c
	}
	return n
}

// Quantile returns the upper bound (µs) of the bucket holding quantile q.
func (h *LatHist) Quantile(q float64) float64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = max(rank, 1)
	var acc uint64
	for i, c := range h {
		acc += c
		if acc >= rank {
			return float64(uint64(1) << i)
		}
	}
	return float64(uint64(1) << (len(h) - 1))
}

// SoakStats is what one worker reports (JSON on its stdout).
type SoakStats struct {
	Rounds int                 `json:"rounds"`
	Ops    map[string]int      `json:"ops"`
	Lat    LatHist             `json:"lat"`
	OpLat  map[string]*LatHist `json:"op_lat,omitempty"`
	Errors []string            `json:"errors,omitempty"`
}

// Merge adds o into s.
func (s *SoakStats) Merge(o *SoakStats) {
	s.Rounds += o.Rounds
	if s.Ops == nil {
		s.Ops = map[string]int{}
	}
	if s.OpLat == nil {
		s.OpLat = map[string]*LatHist{}
	}
	for k, v := range o.Ops {
		s.Ops[k] += v
	}
	for k, v := range o.OpLat {
		if s.OpLat[k] == nil {
			s.OpLat[k] = &LatHist{}
		}
		s.OpLat[k].Merge(v)
	}
	s.Lat.Merge(&o.Lat)
	for _, e := range o.Errors {
		if len(s.Errors) < MaxErrors {
			s.Errors = append(s.Errors, e)
		}
	}
}

// SoakJournal is the file in each worker's directory that gets one line
// per finished round: the host counts them after the run.
const SoakJournal = "journal"

// soakWorker is one worker's state.
type soakWorker struct {
	dir   string // the worker's own directory
	read  string // the read-only image ("" when none)
	files []Entry
	rng   *rand.Rand
	st    SoakStats
}

// RunSoakWorker runs rounds in dir/w<id> until the deadline; files are the
// image's regular files (Read, checked by md5). The worker's directory is
// left holding only its journal.
func RunSoakWorker(dir, read string, want *Manifest, id int, until time.Time) SoakStats {
	w := &soakWorker{dir: filepath.Join(dir, fmt.Sprintf("w%d", id)), read: read,
		rng: rand.New(rand.NewPCG(uint64(id)+1, 13)),
		st:  SoakStats{Ops: map[string]int{}, OpLat: map[string]*LatHist{}}}
	if want != nil {
		for _, e := range want.Entries {
			if e.Type == TypeFile && e.Sum != "" {
				w.files = append(w.files, e)
			}
		}
	}
	if err := w.op("mkdir", func() error { return os.MkdirAll(w.dir, 0o755) }); err != nil {
		w.fail("worker dir: %v", err)
		return w.st
	}
	for time.Now().Before(until) && len(w.st.Errors) == 0 {
		if err := w.round(w.st.Rounds); err != nil {
			w.fail("round %d: %v", w.st.Rounds, err)
			break
		}
		w.st.Rounds++
	}
	return w.st
}

func (w *soakWorker) fail(format string, args ...any) {
	if len(w.st.Errors) < MaxErrors {
		w.st.Errors = append(w.st.Errors, fmt.Sprintf("w%s: ", filepath.Base(w.dir))+fmt.Sprintf(format, args...))
	}
}

// op times one operation and counts it.
func (w *soakWorker) op(name string, f func() error) error {
	t0 := time.Now()
	err := f()
	d := time.Since(t0)
	w.st.Ops[name]++
	w.st.Lat.Add(d)
	h := w.st.OpLat[name]
	if h == nil {
		h = &LatHist{}
		w.st.OpLat[name] = h
	}
	h.Add(d)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// round is one pass over every kind of operation in a fresh directory,
// each result checked, the directory removed at the end, and a line
// appended (and fsynced) to the journal.
func (w *soakWorker) round(k int) error {
	d := filepath.Join(w.dir, fmt.Sprintf("r%d", k))
	f := filepath.Join(d, "file")
	data := SeededBytes(uint64(k)<<8|uint64(w.rng.IntN(256)), 1+w.rng.IntN(192<<10))
	var st unix.Stat_t
	steps := []struct {
		name string
		do   func() error
	}{
		{"mkdir", func() error { return unix.Mkdir(d, 0o755) }},
		{"create+write+fsync", func() error { return writeWith(f, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644, data, 0, 32<<10, true) }},
		{"read", func() error { return readEqual(f, data) }},
		{"pwrite", func() error { return pwrite(f, []byte("PATCH"), int64(len(data)/2)) }},
		{"truncate", func() error { data = data[:len(data)/2]; return unix.Truncate(f, int64(len(data))) }},
		{"stat", func() error { return statSize(f, &st, int64(len(data))) }},
		{"read", func() error { return readEqual(f, data) }},
		{"setxattr", func() error { return unix.Setxattr(f, "user.soak", []byte(fmt.Sprint(k)), unix.XATTR_CREATE) }},
		{"getxattr", func() error { return xattrEqual(f, "user.soak", fmt.Sprint(k)) }},
		{"listxattr", func() error { return xattrListed(f, "user.soak") }},
		{"removexattr", func() error { return unix.Removexattr(f, "user.soak") }},
		{"symlink", func() error { return unix.Symlink("file", filepath.Join(d, "link")) }},
		{"readlink", func() error { return linkEqual(filepath.Join(d, "link"), "file") }},
		{"link", func() error { return unix.Link(f, filepath.Join(d, "hard")) }},
		{"stat", func() error {
			if err := unix.Lstat(filepath.Join(d, "hard"), &st); err != nil {
				return err
			}
			if st.Nlink != 2 {
				return fmt.Errorf("nlink %d after link, want 2", st.Nlink)
			}
			return nil
		}},
		{"rename", func() error { return unix.Rename(f, filepath.Join(w.dir, "moved")) }},
		{"rename", func() error { return unix.Rename(filepath.Join(w.dir, "moved"), filepath.Join(d, "renamed")) }},
		{"readdir", func() error { return dirEqual(d, "hard", "link", "renamed") }},
		{"read", func() error { return readEqual(filepath.Join(d, "hard"), data) }},
		{"unlink", func() error { return unix.Unlink(filepath.Join(d, "link")) }},
		{"unlink", func() error { return unix.Unlink(filepath.Join(d, "hard")) }},
		{"unlink", func() error { return unix.Unlink(filepath.Join(d, "renamed")) }},
		{"rmdir", func() error { return unix.Rmdir(d) }},
		{"journal", func() error {
			return writeWith(filepath.Join(w.dir, SoakJournal), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644,
				[]byte(fmt.Sprintf("round %d %d\n", k, len(data))), -1, 0, true)
		}},
	}
	for _, s := range steps {
		if err := w.op(s.name, s.do); err != nil {
			return err
		}
	}
	if len(w.files) == 0 {
		return nil
	}
	// the image: one file read and checked, its directory listed, a stat
	e := w.files[w.rng.IntN(len(w.files))]
	p := filepath.Join(w.read, filepath.FromSlash(e.Path))
	if err := w.op("image-read", func() error { return md5Equal(p, e.Sum) }); err != nil {
		return err
	}
	if err := w.op("image-readdir", func() error { _, err := readDirNames(filepath.Dir(p)); return err }); err != nil {
		return err
	}
	return w.op("image-stat", func() error { return statSize(p, &st, e.Size) })
}

func readEqual(p string, want []byte) error {
	got, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: read %d bytes that differ from the %d written", p, len(got), len(want))
	}
	return nil
}

func statSize(p string, st *unix.Stat_t, size int64) error {
	if err := unix.Lstat(p, st); err != nil {
		return err
	}
	if st.Size != size {
		return fmt.Errorf("%s: size %d, want %d", p, st.Size, size)
	}
	return nil
}

func xattrEqual(p, name, want string) error {
	buf := make([]byte, 256)
	n, err := unix.Getxattr(p, name, buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != want {
		return fmt.Errorf("%s: %s = %q, want %q", p, name, buf[:n], want)
	}
	return nil
}

func xattrListed(p, name string) error {
	names, err := listXattrs(p)
	if err != nil {
		return err
	}
	for _, n := range names {
		if n == name {
			return nil
		}
	}
	return fmt.Errorf("%s: listxattr %v lacks %s", p, names, name)
}

func linkEqual(p, want string) error {
	buf := make([]byte, 256)
	n, err := unix.Readlink(p, buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != want {
		return fmt.Errorf("%s -> %q, want %q", p, buf[:n], want)
	}
	return nil
}

func readDirNames(d string) ([]string, error) {
	f, err := os.Open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

func dirEqual(d string, want ...string) error {
	got, err := readDirNames(d)
	if err != nil {
		return err
	}
	if strings.Join(got, "/") != strings.Join(want, "/") {
		return fmt.Errorf("%s lists %v, want %v", d, got, want)
	}
	return nil
}

func md5Equal(p, want string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	s := md5.Sum(b)
	if got := hex.EncodeToString(s[:]); got != want {
		return fmt.Errorf("%s: md5 %s, want %s", p, got, want)
	}
	return nil
}

// CountJournal returns the rounds recorded in a worker's journal and
// checks that they are 0..n-1 in order.
func CountJournal(p string) (int, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for i, l := range lines {
		var k, n int
		if _, err := fmt.Sscanf(l, "round %d %d", &k, &n); err != nil || k != i {
			return i, fmt.Errorf("%s line %d: %q", p, i+1, l)
		}
	}
	if len(b) == 0 {
		return 0, errors.New(p + ": empty")
	}
	return len(lines), nil
}
