package check

import (
	"crypto/md5"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DropCaches syncs and drops the page, dentry and inode caches (guest only:
// it needs root and writes /proc/sys/vm/drop_caches).
func DropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// Median returns the median of v (0 for none).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// SeqRead reads file from start to end with 1 MiB reads, reps times, each
// after dropping the caches, and reports MB/s (10^6 bytes per second).
func SeqRead(file string, reps int) (map[string]float64, error) {
	buf := make([]byte, 1<<20)
	var rates []float64
	var size int64
	for i := 0; i < max(reps, 1); i++ {
		r, n, err := seqReadOnce(file, buf)
		if err != nil {
			return nil, err
		}
		rates, size = append(rates, r), n
	}
	m := map[string]float64{"bytes": float64(size), "MBps": Median(rates), "reps": float64(len(rates))}
	for i, r := range rates {
		m[fmt.Sprintf("MBps_%d", i+1)] = r
	}
	return m, nil
}

// seqReadOnce drops the caches and reads file from start to end with
// len(buf) reads, returning MB/s (10^6 bytes per second) and the bytes
// read.
func seqReadOnce(file string, buf []byte) (float64, int64, error) {
	if err := DropCaches(); err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	n, err := sysReadFile(file, buf, func([]byte) {})
	d := time.Since(t0).Seconds()
	if err != nil {
		return 0, 0, fmt.Errorf("seqread %s: %w", file, err)
	}
	return float64(n) / d / 1e6, n, nil
}

// StatWalk measures, with cold caches, a find-like walk of dir (getdents
// plus lstat of every entry: READDIRPLUS territory) and an lstat of every
// path by name with no readdir before it (one LOOKUP each). It reports
// entries/s and files/s as medians of reps runs.
func StatWalk(dir string, reps int) (map[string]float64, error) {
	var walkRates []float64
	var paths []string
	entries := 0
	for i := 0; i < max(reps, 1); i++ {
		if err := DropCaches(); err != nil {
			return nil, err
		}
		r, n, err := walkRate(dir, &paths)
		if err != nil {
			return nil, fmt.Errorf("statwalk: %w", err)
		}
		entries = n
		walkRates = append(walkRates, r)
	}
	pathRates, err := coldStats(dir, paths, reps)
	if err != nil {
		return nil, fmt.Errorf("statwalk: %w", err)
	}
	return map[string]float64{
		"entries":         float64(entries),
		"files":           float64(len(paths)),
		"walk_entries_ps": Median(walkRates),
		"stat_files_ps":   Median(pathRates),
	}, nil
}

// MetaRead is the container-start workload set over dir (a tree of many
// small files), every figure a median of reps runs:
//   - cold_find_ps: entries/s of a find-like walk (getdents plus lstat of
//     every entry) after dropping the caches;
//   - warm_find_ps: the same walk again, caches kept (what the attribute
//     and entry timeouts allow the guest to answer alone);
//   - stat_files_ps: lstat of every file by path with cold caches and no
//     readdir first (one LOOKUP per path component not cached);
//   - md5_files_ps: open, read and MD5 of every file with cold caches (as
//     md5sum -c: LOOKUP, OPEN, READ, RELEASE per file).
func MetaRead(dir string, reps int) (map[string]float64, error) {
	reps = max(reps, 1)
	var cold, warm, sums []float64
	var paths []string
	for i := 0; i < reps; i++ {
		c, w, err := walks(dir, &paths)
		if err != nil {
			return nil, err
		}
		cold, warm = append(cold, c), append(warm, w)
	}
	stat, err := coldStats(dir, paths, reps)
	if err != nil {
		return nil, fmt.Errorf("metaread: %w", err)
	}
	buf := make([]byte, 64<<10)
	for i := 0; i < reps; i++ {
		r, err := md5Files(dir, paths, buf)
		if err != nil {
			return nil, err
		}
		sums = append(sums, r)
	}
	return map[string]float64{
		"files":         float64(len(paths)),
		"cold_find_ps":  Median(cold),
		"warm_find_ps":  Median(warm),
		"stat_files_ps": Median(stat),
		"md5_files_ps":  Median(sums),
	}, nil
}

// walks drops the caches and walks dir twice, cold then warm, returning
// both rates (entries/s), as walkRate sets or checks *paths.
func walks(dir string, paths *[]string) (cold, warm float64, err error) {
	if err := DropCaches(); err != nil {
		return 0, 0, err
	}
	if cold, _, err = walkRate(dir, paths); err != nil {
		return 0, 0, fmt.Errorf("metaread: %w", err)
	}
	if warm, _, err = walkRate(dir, paths); err != nil {
		return 0, 0, fmt.Errorf("metaread: %w", err)
	}
	return cold, warm, nil
}

// walkRate walks dir (walkCount) and returns entries/s and the entries
// met. It sets *paths to the files met, or checks that the walk met as
// many as *paths holds already.
func walkRate(dir string, paths *[]string) (float64, int, error) {
	t0 := time.Now()
	var got []string
	var st unix.Stat_t // one for the whole walk: sysLstat's buffer escapes to the heap
	n, err := walkCount(dir, ".", &got, &st)
	d := time.Since(t0).Seconds()
	if err != nil {
		return 0, 0, err
	}
	if *paths != nil && len(got) != len(*paths) {
		return 0, 0, fmt.Errorf("walk of %s: %d entries, then %d", dir, len(*paths), len(got))
	}
	*paths = got
	return float64(n) / d, n, nil
}

// md5Files drops the caches, then opens, reads and MD5s every path below
// dir, returning files/s.
func md5Files(dir string, paths []string, buf []byte) (float64, error) {
	if err := DropCaches(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	for _, p := range paths {
		h := md5.New()
		if _, err := sysReadFile(filepath.Join(dir, p), buf, func(b []byte) { h.Write(b) }); err != nil {
			return 0, fmt.Errorf("metaread: read %s: %w", p, err)
		}
		_ = h.Sum(buf[:0:0])
	}
	return float64(len(paths)) / time.Since(t0).Seconds(), nil
}

// PairedMetrics are the figures PairedWorkloads reports, as SeqRead and
// MetaRead name them.
var PairedMetrics = []string{"MBps", "cold_find_ps", "warm_find_ps", "stat_files_ps", "md5_files_ps"}

// PairedWorkloads measures SeqRead's figure (file) and MetaRead's (dir)
// on the same share mounted at each of mounts (served by different
// daemons), reps times. Each figure of a repetition is measured on every
// mount back to back, the mounts' order reversed at every other
// repetition, so that the two measurements of a pair meet the host at the
// same moment give or take one workload (seconds), where measuring all
// of one daemon's figures before the other's puts a minute between them.
// A first repetition, not reported, warms both up.
// Metric "NAME/I/R" is figure NAME (PairedMetrics) on mounts[I] in
// repetition R; "files" counts the tree's files.
func PairedWorkloads(mounts []string, file, dir string, reps int) (map[string]float64, error) {
	if len(mounts) == 0 {
		return nil, fmt.Errorf("paired workloads: no mounts")
	}
	m := map[string]float64{}
	big, small := make([]byte, 1<<20), make([]byte, 64<<10)
	var paths []string
	// Repetition -1 warms up and is not reported: the first read of the
	// big file in a boot was 0.6x the second whichever daemon served it.
	for r := -1; r < max(reps, 1); r++ {
		order := make([]int, len(mounts))
		for i := range order {
			order[i] = i
			if r%2 != 0 {
				order[i] = len(mounts) - 1 - i
			}
		}
		put := func(name string, i int, v float64) {
			if r >= 0 {
				m[fmt.Sprintf("%s/%d/%d", name, i, r)] = v
			}
		}
		// The sequential read, the shortest figure (under a second) and
		// the one a pair's position moved most (0.6-0.9x for whichever
		// read first in some boots), is read A B B A: each mount's figure
		// is the mean of its two reads, one first and one second.
		rates := make([]float64, len(mounts))
		abba := slices.Clone(order)
		for k := len(order) - 1; k >= 0; k-- {
			abba = append(abba, order[k])
		}
		for _, i := range abba {
			v, _, err := seqReadOnce(filepath.Join(mounts[i], file), big)
			if err != nil {
				return m, err
			}
			rates[i] += v / 2
		}
		for _, i := range order {
			put("MBps", i, rates[i])
		}
		for _, i := range order {
			c, w, err := walks(filepath.Join(mounts[i], dir), &paths)
			if err != nil {
				return m, fmt.Errorf("%s: %w", mounts[i], err)
			}
			put("cold_find_ps", i, c)
			put("warm_find_ps", i, w)
		}
		for _, i := range order {
			v, err := coldStats(filepath.Join(mounts[i], dir), paths, 1)
			if err != nil {
				return m, fmt.Errorf("%s: %w", mounts[i], err)
			}
			put("stat_files_ps", i, v[0])
		}
		for _, i := range order {
			v, err := md5Files(filepath.Join(mounts[i], dir), paths, small)
			if err != nil {
				return m, fmt.Errorf("%s: %w", mounts[i], err)
			}
			put("md5_files_ps", i, v)
		}
	}
	m["files"] = float64(len(paths))
	return m, nil
}

// coldStats lstat()s every path below dir, reps times after dropping the
// caches, and returns the rates (paths/s).
func coldStats(dir string, paths []string, reps int) ([]float64, error) {
	var rates []float64
	for i := 0; i < max(reps, 1); i++ {
		if err := DropCaches(); err != nil {
			return nil, err
		}
		var st unix.Stat_t
		t0 := time.Now()
		for _, p := range paths {
			if err := sysLstat(filepath.Join(dir, p), &st); err != nil {
				return nil, fmt.Errorf("lstat %s: %w", p, err)
			}
		}
		rates = append(rates, float64(len(paths))/time.Since(t0).Seconds())
	}
	return rates, nil
}

// walkCount lstat()s every entry below root/rel into st and collects the
// paths of the non-directories; it returns the number of entries stat'ed.
func walkCount(root, rel string, files *[]string, st *unix.Stat_t) (int, error) {
	full := filepath.Join(root, rel)
	if err := sysLstat(full, st); err != nil {
		return 0, fmt.Errorf("lstat %s: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		*files = append(*files, rel)
		return 1, nil
	}
	n := 1
	var childErr error
	err := sysWalkDir(full, func(name string) error {
		var c int
		c, childErr = walkCount(root, path.Join(rel, name), files, st)
		n += c
		return childErr
	})
	if err != nil && childErr == nil {
		return n, fmt.Errorf("readdir %s: %w", rel, err)
	}
	return n, err
}

// demoShown is how much of the file Demo prints: enough to see it was read.
const demoShown = 256

// Demo writes a listing of dir (mode, owner, size, path, link target) and
// the first demoShown bytes of file to w.
func Demo(w io.Writer, dir, file string) error {
	m, _, err := Build(dir, ManifestOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "listing of %s (%d entries):\n", dir, len(m.Entries))
	for _, e := range m.Entries {
		extra := ""
		if e.Target != "" {
			extra = " -> " + e.Target
		}
		fmt.Fprintf(w, "  %s %04o %5d:%-5d %10d  %s%s\n", e.Type, e.Mode, e.UID, e.GID, e.Size, e.Path, extra)
	}
	if file == "" {
		return nil
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	b := make([]byte, demoShown)
	n, err := io.ReadFull(f, b)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return err
	}
	fmt.Fprintf(w, "content of %s (%d of %d bytes):\n%s\n", file, n, st.Size(), b[:n])
	return nil
}

// Page-cache expectations of a Reread step (Step.Cache).
const (
	CacheKept    = "kept"    // every page survives close and reopen (FOPEN_KEEP_CACHE)
	CacheDropped = "dropped" // none does (the backend's open invalidates them)
)

// Reread drops the caches, then reads file reps times (at least 2), each
// time opening it, reading to the end with 1 MiB reads and closing it.
// Between the first and the second read it reopens the file and counts its
// pages in the page cache (mincore): what survived the close. Metrics:
// bytes, MBps_N per read (10^6 bytes/s), cold_MBps (the first), reread_MBps
// (the second), pages and resident (pages cached after the reopen). With
// want CacheKept or CacheDropped, other residency is an error.
func Reread(file string, reps int, want string) (map[string]float64, error) {
	if want != "" && want != CacheKept && want != CacheDropped {
		return nil, fmt.Errorf("reread: cache %q, want %q, %q or none", want, CacheKept, CacheDropped)
	}
	if err := DropCaches(); err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	m := map[string]float64{}
	var size int64 = -1
	for i := 1; i <= max(reps, 2); i++ {
		t0 := time.Now()
		n, err := sysReadFile(file, buf, func([]byte) {})
		d := time.Since(t0).Seconds()
		if err != nil {
			return m, fmt.Errorf("reread %s (read %d): %w", file, i, err)
		}
		if size >= 0 && n != size {
			return m, fmt.Errorf("reread %s: read %d gave %d bytes, the first %d", file, i, n, size)
		}
		size = n
		m[fmt.Sprintf("MBps_%d", i)] = float64(n) / d / 1e6
		if i > 1 {
			continue
		}
		if n == 0 {
			return m, fmt.Errorf("reread: %s is empty", file)
		}
		resident, pages, err := cachedPages(file, n)
		if err != nil {
			return m, fmt.Errorf("reread %s: %w", file, err)
		}
		m["resident"], m["pages"] = float64(resident), float64(pages)
	}
	m["bytes"], m["cold_MBps"], m["reread_MBps"] = float64(size), m["MBps_1"], m["MBps_2"]
	switch resident, pages := m["resident"], m["pages"]; {
	case want == CacheKept && resident != pages:
		return m, fmt.Errorf("reread %s: %.0f of %.0f pages cached after close and reopen, want all", file, resident, pages)
	case want == CacheDropped && resident != 0:
		return m, fmt.Errorf("reread %s: %.0f of %.0f pages cached after close and reopen, want none", file, resident, pages)
	}
	return m, nil
}

// cachedPages opens p, maps its first size bytes and counts the pages in
// the page cache (mincore, which faults nothing in).
func cachedPages(p string, size int64) (resident, pages int, err error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("reopen: %w", err)
	}
	defer unix.Close(fd)
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, 0, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(mem)
	vec := make([]byte, (len(mem)+os.Getpagesize()-1)/os.Getpagesize())
	// x/sys/unix has no mincore(2) wrapper
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)),
		uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return 0, 0, fmt.Errorf("mincore: %w", e)
	}
	for _, v := range vec {
		resident += int(v & 1)
	}
	return resident, len(vec), nil
}
