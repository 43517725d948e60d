package guesttests

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

// testEnv is what every guest test needs: a built guest and the backends.
type testEnv struct {
	guest    *Guest
	backends []Selected
}

// setupGuests skips when guests cannot run here (not root, no QEMU), and
// builds the guest (cached) and probes the backends otherwise.
func setupGuests(t testing.TB) *testEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("guest tests boot QEMU guests: skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := logrus.StandardLogger()
	if err := EnsureHost(ctx, log); err != nil {
		testenv.Skipf(t, "guest tests cannot run here: %v", err)
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(root, "guest-tests", ".cache")
	t0 := time.Now()
	g, err := BuildGuest(ctx, BuildOptions{ModuleRoot: root, CacheDir: cache, Log: log})
	if err != nil {
		t.Fatalf("building the guest: %v", err)
	}
	t.Logf("guest: kernel %s, %d modules, initramfs %s (ready in %s)", g.KernelPackage, len(g.Modules),
		filepath.Base(g.Initramfs), time.Since(t0).Round(time.Millisecond))
	sel, err := SelectBackends(ctx, Backends(root, cache), os.Getenv(EnvBackends))
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{guest: g, backends: sel}
}

// forEachBackend runs f as a subtest per backend; unavailable ones skip
// (or fail when NVFS_BACKENDS named them).
func (e *testEnv) forEachBackend(t *testing.T, f func(t *testing.T, b Backend)) {
	for _, s := range e.backends {
		t.Run(s.Backend.Name, func(t *testing.T) {
			if s.Unavailable != nil {
				if s.Requested {
					t.Fatalf("backend %s was requested in %s but cannot serve: %v", s.Backend.Name, EnvBackends, s.Unavailable)
				}
				testenv.Skipf(t, "backend %s cannot serve yet (set %s to require it): %v", s.Backend.Name, EnvBackends, s.Unavailable)
			}
			f(t, s.Backend)
		})
	}
}

// Differences between backends that are not bugs: none so far. (The C
// virtiofsd's cache=none is our cache=never; Backend.Command maps it.)

// TestGuest runs, per backend and in two boots, every check of issue 3:
//   - rw boot (cache=auto, xattr on): the special tree's manifest with
//     checksums, a find+stat of 10,000 files, the mutations (checked in the
//     guest and then exactly on the host), xattr set/get/list/remove;
//   - ro boot (cache=never, no xattr): the image check (manifest with "ro",
//     writes refused with EROFS).
//
// Each boot must end with a clean umount and the backend exiting 0 by itself.
func TestGuest(t *testing.T) {
	env := setupGuests(t)
	share := t.TempDir()
	ref := t.TempDir()
	t0 := time.Now()
	for _, s := range []struct {
		what string
		do   func() error
	}{
		{"special tree", func() error { return MakeSpecialTree(filepath.Join(share, "tree"), 64) }},
		{"tree xattr", func() error {
			return unix.Setxattr(filepath.Join(share, "tree", "hello.txt"), "user.nvfs.tree", []byte("tree value"), 0)
		}},
		{"many files", func() error { return MakeManyFiles(filepath.Join(share, "many"), 10000) }},
		{"reference mutations", func() error {
			if err := os.Mkdir(filepath.Join(ref, "mut"), 0o755); err != nil {
				return err
			}
			if err := check.MutationBase(filepath.Join(ref, "mut")); err != nil {
				return err
			}
			return check.Mutate(filepath.Join(ref, "mut"))
		}},
	} {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
	}
	full := check.ManifestOptions{Hash: true, Xattrs: true}
	wantTree, _, err := check.Build(filepath.Join(share, "tree"), full)
	if err != nil {
		t.Fatal(err)
	}
	wantMany, _, err := check.Build(filepath.Join(share, "many"), check.ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantMut, _, err := check.Build(filepath.Join(ref, "mut"), full)
	if err != nil {
		t.Fatal(err)
	}
	if len(wantMany.Entries) != 10101 {
		t.Fatalf("many: %d entries, want 10101", len(wantMany.Entries))
	}
	t.Logf("host trees ready in %s", time.Since(t0).Round(time.Millisecond))

	env.forEachBackend(t, func(t *testing.T, b Backend) {
		t.Run("rw", func(t *testing.T) {
			withX := check.CompareOptions{Xattrs: true}
			// the guest and the host mutate at different times
			mutCmp := check.CompareOptions{Xattrs: true, IgnoreMtime: true}
			steps := []check.Step{
				{Name: "tree", Kind: check.KindManifest, Dir: "tree", Manifest: wantTree, Build: full, Compare: withX},
				{Name: "find-stat-10k", Kind: check.KindManifest, Dir: "many", Manifest: wantMany},
				{Name: "mutate", Kind: check.KindMutate, Dir: "mut", Manifest: wantMut, Build: full, Compare: mutCmp},
				{Name: "xattr", Kind: check.KindXattr, Dir: "xattr"},
			}
			for _, d := range []string{"mut", "xattr"} {
				if err := os.RemoveAll(filepath.Join(share, d)); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(filepath.Join(share, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := check.MutationBase(filepath.Join(share, "mut")); err != nil {
				t.Fatal(err)
			}
			if err := check.XattrBase(filepath.Join(share, "xattr")); err != nil {
				t.Fatal(err)
			}
			res, err := Run(context.Background(), RunOptions{
				Guest: env.guest, Backend: b,
				Serve:   BackendConfig{SharedDir: share, Cache: "auto", Xattr: true},
				Config:  check.Config{Steps: steps},
				LogDir:  logDir(t),
				Timeout: 180 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			logRun(t, res)
			if err := Verify(res, steps); err != nil {
				t.Errorf("%v\n%s", err, res.Tails(15))
			}
			// on the host, exactly what the reference got
			gotMut, _, err := check.Build(filepath.Join(share, "mut"), full)
			if err != nil {
				t.Fatal(err)
			}
			if d := check.Compare(wantMut, gotMut, mutCmp); len(d) > 0 {
				t.Errorf("host view of the guest's mutations differs from the reference:\n%v", d)
			}
			if d := check.CheckXattrsOnHost(filepath.Join(share, "xattr")); len(d) > 0 {
				t.Errorf("host view of the guest's xattrs: %v", d)
			}
			gotTree, _, err := check.Build(filepath.Join(share, "tree"), full)
			if err != nil {
				t.Fatal(err)
			}
			if d := check.Compare(wantTree, gotTree, withX); len(d) > 0 {
				t.Errorf("the read-only part of the share changed: %v", d)
			}
		})
		t.Run("ro", func(t *testing.T) {
			res, err := ReadOnlyCheck{
				Guest: env.guest, Backend: b,
				Serve:   BackendConfig{SharedDir: filepath.Join(share, "tree"), Cache: "never"},
				Want:    wantTree,
				LogDir:  logDir(t),
				Timeout: 120 * time.Second,
			}.Run(context.Background())
			if res != nil {
				logRun(t, res)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	})
}

// EnvArtifacts names the environment variable of a directory where runs
// keep their logs (serial, backend, QEMU) per test; unset, they go to the
// test's temporary directory and failures print their tails.
const EnvArtifacts = "NVFS_ARTIFACTS"

// logDir returns a new directory for one boot's logs: under
// NVFS_ARTIFACTS, the test's name with the first free "-N" suffix (a
// benchmark or test that boots several times, or runs with -count, keeps
// every boot); otherwise a temporary directory.
func logDir(t testing.TB) string {
	d := os.Getenv(EnvArtifacts)
	if d == "" {
		return t.TempDir()
	}
	p, err := newNumberedDir(d, strings.ReplaceAll(t.Name(), "/", "_"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newNumberedDir creates parent/name-N for the smallest N from 1 that does
// not exist yet (mkdir is the atomic claim, so parallel callers never share).
func newNumberedDir(parent, name string) (string, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	for n := 1; ; n++ {
		p := filepath.Join(parent, fmt.Sprintf("%s-%d", name, n))
		err := os.Mkdir(p, 0o755)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("log dir: %w", err)
		}
	}
}

func TestNewNumberedDir(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "art")
	var got []string
	for range 3 {
		p, err := newNumberedDir(parent, "TestX_sub")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, filepath.Base(p))
	}
	if want := "[TestX_sub-1 TestX_sub-2 TestX_sub-3]"; fmt.Sprint(got) != want {
		t.Fatalf("dirs %v, want %s", got, want)
	}
}

// TestGuestImageStyle runs ReadOnlyCheck the way an image backend is
// wired (a Template with Vars and no SharedDir), through the C virtiofsd.
func TestGuestImageStyle(t *testing.T) {
	env := setupGuests(t)
	src := t.TempDir()
	if err := MakeSpecialTree(src, 4); err != nil {
		t.Fatal(err)
	}
	want, _, err := check.Build(src, check.ManifestOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	b := Template("c-image-style", []string{CVirtiofsdPath, "--socket-path={socket}", "-o", "source={image}", "-o", "cache=always"})
	res, err := ReadOnlyCheck{
		Guest: env.guest, Backend: b,
		Serve:   BackendConfig{Vars: map[string]string{"image": src}},
		Want:    want,
		Compare: check.CompareOptions{IgnoreDirNlink: true},
		LogDir:  logDir(t),
		Timeout: 120 * time.Second,
	}.Run(context.Background())
	if res != nil {
		logRun(t, res)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestGuestFaults: a backend killed while the guest reads, and a guest
// that outlives its timeout. Run must stop QEMU within seconds (not wait
// for the guest's hung FUSE requests), report it, and leave none of the
// processes it started.
func TestGuestFaults(t *testing.T) {
	env := setupGuests(t)
	share := t.TempDir()
	if err := writeSeeded(filepath.Join(share, "big.bin"), 1, 32<<20); err != nil {
		t.Fatal(err)
	}
	longRead := []check.Step{{Name: "seqread", Kind: check.KindSeqRead, File: "big.bin", Reps: 1000}}
	killed := Template("c-killed-after-10s", []string{"/bin/sh", "-c",
		"(sleep 10; kill -9 $$) & exec " + CVirtiofsdPath + " --socket-path={socket} -o source={share} -o cache=auto"})
	tests := []struct {
		name    string
		backend Backend
		timeout time.Duration
		want    string
	}{
		{"backend killed", killed, 120 * time.Second, "exited"},
		{"timeout", CVirtiofsd(), 8 * time.Second, "timeout after 8s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Now()
			res, err := Run(context.Background(), RunOptions{
				Guest: env.guest, Backend: tt.backend,
				Serve:   BackendConfig{SharedDir: share},
				Config:  check.Config{Steps: longRead},
				LogDir:  logDir(t),
				Timeout: tt.timeout,
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v; want an error with %q", err, tt.want)
			}
			if d := time.Since(t0); d > 60*time.Second {
				t.Fatalf("Run took %s", d)
			}
			for _, g := range []int{res.BackendPid, res.QEMUPid} {
				if g == 0 || !groupGone(g) {
					t.Fatalf("process group %d: %v left", g, pidsInGroup(g))
				}
			}
			t.Logf("stopped after %s: %v", time.Since(t0).Round(time.Millisecond), strings.SplitN(err.Error(), "\n", 2)[0])
		})
	}
}

// logRun records the timings of a run in the test log.
func logRun(t *testing.T, res *RunResult) {
	t.Helper()
	t.Logf("boot to mounted %.2fs, QEMU total %.2fs", res.Events["MOUNTED"].Seconds(), res.Wall.Seconds())
	for _, r := range res.Results {
		t.Logf("  step %-14s ok=%v secs=%.2f metrics=%v", r.Step, r.OK, r.Metrics["secs"], r.Metrics)
	}
}

// TestGuestTwoDevices: one guest, two virtio-fs devices served by the two
// backends (RunOptions.Extra), each sharing its own tree; a step that names
// a mount point (Step.Mount) sees that device's tree, as the paired
// benchmark (EnvBenchPaired) relies on, and its step (check.KindPaired)
// reports every figure of every repetition on each mount it names. The
// first daemon exits by itself (Verify) and the second's CPU time is
// counted.
func TestGuestTwoDevices(t *testing.T) {
	env := setupGuests(t)
	if len(env.backends) < 2 {
		t.Fatalf("two backends needed, have %d", len(env.backends))
	}
	for _, s := range env.backends[:2] {
		if s.Unavailable != nil {
			t.Fatalf("backend %s cannot serve: %v", s.Backend.Name, s.Unavailable)
		}
	}
	a, bdir := t.TempDir(), t.TempDir()
	if err := MakeSpecialTree(a, 4); err != nil {
		t.Fatal(err)
	}
	if err := MakeManyFiles(bdir, 50); err != nil {
		t.Fatal(err)
	}
	wantA, _, err := check.Build(a, check.ManifestOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	wantB, _, err := check.Build(bdir, check.ManifestOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	first, second := env.backends[0].Backend, env.backends[1].Backend
	steps := []check.Step{
		{Name: "first", Kind: check.KindManifest, Manifest: wantA, Build: check.ManifestOptions{Hash: true}},
		{Name: "second", Kind: check.KindManifest, Manifest: wantB, Build: check.ManifestOptions{Hash: true}, Mount: "/mnt/second"},
		// The paired benchmark's step, small: the second tree twice.
		{Name: "paired", Kind: check.KindPaired, File: "d000/f001", Dir: ".", Reps: 2, Mounts: []string{"/mnt/second", "/mnt/second"}},
	}
	res, err := Run(context.Background(), RunOptions{
		Guest: env.guest, Backend: first,
		Serve: BackendConfig{SharedDir: a},
		Config: check.Config{Tag: "first", Mount: "/mnt/first", Opts: "ro", Steps: steps,
			Extra: []check.ExtraMount{{Tag: "second", Mount: "/mnt/second"}}},
		Extra:   []ExtraBackend{{Backend: second, Serve: BackendConfig{SharedDir: bdir}, Tag: "second"}},
		LogDir:  logDir(t),
		Timeout: 180 * time.Second,
	})
	if res != nil {
		logRun(t, res)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(res, steps); err != nil {
		t.Fatal(err)
	}
	if len(res.ExtraCPU) != 1 || res.ExtraCPU[0] <= 0 {
		t.Errorf("the second daemon's CPU time: %v", res.ExtraCPU)
	}
	m := res.Result("paired").Metrics
	if m["files"] != 50 {
		t.Errorf("paired step: %v files, want 50", m["files"])
	}
	want := 0
	for _, name := range check.PairedMetrics {
		for i := 0; i < 2; i++ {
			for r := 0; r < 2; r++ {
				want++
				if k := fmt.Sprintf("%s/%d/%d", name, i, r); !(m[k] > 0) {
					t.Errorf("paired step: %s = %v", k, m[k])
				}
			}
		}
	}
	got := 0
	for k := range m {
		if strings.Contains(k, "/") {
			got++
		}
	}
	if got != want { // the warm-up repetition is not reported
		t.Errorf("paired step: %d figures, want %d: %v", got, want, m)
	}
}
