package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"golang.org/x/sys/unix"
)

// smallTree makes a tree with a file, a hard link pair, a symlink, a
// subdirectory and an xattr.
func smallTree(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(d, "f"), []byte("content"), 0o644))
	must(os.WriteFile(filepath.Join(d, "h1"), []byte("linked"), 0o644))
	must(os.Link(filepath.Join(d, "h1"), filepath.Join(d, "h2")))
	must(os.Symlink("f", filepath.Join(d, "l")))
	must(os.Mkdir(filepath.Join(d, "sub"), 0o755))
	must(os.WriteFile(filepath.Join(d, "sub", "g"), nil, 0o600))
	if err := unix.Setxattr(filepath.Join(d, "f"), "user.k", []byte("v"), 0); err != nil {
		testenv.Skipf(t, "no user xattrs here: %v", err)
	}
	return d
}

func TestCompareDetects(t *testing.T) {
	opts := ManifestOptions{Hash: true, Xattrs: true}
	cmp := CompareOptions{Xattrs: true}
	tests := []struct {
		name   string
		change func(d string) error
		want   string // substring of one reported difference
	}{
		{"nothing", func(string) error { return nil }, ""},
		{"content same size", func(d string) error { return os.WriteFile(filepath.Join(d, "f"), []byte("CONTENT"), 0o644) }, "f: md5"},
		{"size", func(d string) error { return os.Truncate(filepath.Join(d, "f"), 3) }, "f: size 3, want 7"},
		{"mode", func(d string) error { return os.Chmod(filepath.Join(d, "f"), 0o600) }, "f: mode 0600, want 0644"},
		{"owner", func(d string) error { return os.Lchown(filepath.Join(d, "f"), 12, 34) }, "f: owner 12:34"},
		{"missing", func(d string) error { return os.Remove(filepath.Join(d, "sub", "g")) }, "missing: sub/g"},
		{"extra", func(d string) error { return os.WriteFile(filepath.Join(d, "new"), nil, 0o644) }, "unexpected: new"},
		{"symlink target", func(d string) error {
			if err := os.Remove(filepath.Join(d, "l")); err != nil {
				return err
			}
			return os.Symlink("g", filepath.Join(d, "l"))
		}, `l: symlink target "g", want "f"`},
		{"type", func(d string) error {
			if err := os.Remove(filepath.Join(d, "l")); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(d, "l"), []byte("f"), 0o644)
		}, "l: type f, want l"},
		{"hard link broken", func(d string) error {
			if err := os.Remove(filepath.Join(d, "h2")); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(d, "h2"), []byte("linked"), 0o644)
		}, "h1: nlink 1, want 2"},
		{"xattr", func(d string) error { return unix.Setxattr(filepath.Join(d, "f"), "user.k", []byte("w"), 0) }, "f: xattrs"},
		{"mtime by 1ns", func(d string) error { return bumpMtime(filepath.Join(d, "sub", "g"), 1) }, "sub/g: mtime"},
		{"symlink mtime", func(d string) error { return bumpMtime(filepath.Join(d, "l"), 1e9) }, "l: mtime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := smallTree(t)
			want, _, err := Build(d, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.change(d); err != nil {
				t.Fatal(err)
			}
			got, _, err := Build(d, opts)
			if err != nil {
				t.Fatal(err)
			}
			diffs := Compare(want, got, cmp)
			if tt.want == "" {
				if len(diffs) != 0 {
					t.Fatalf("unchanged tree differs: %v", diffs)
				}
				return
			}
			for _, d := range diffs {
				if strings.Contains(d, tt.want) {
					return
				}
			}
			t.Fatalf("differences %q do not mention %q", diffs, tt.want)
		})
	}
}

// bumpMtime moves the mtime of p (not following a symlink) by delta ns.
func bumpMtime(p string, delta int64) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, unix.NsecToTimespec(st.Mtim.Nano() + delta)}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func TestCompareIgnoreMtime(t *testing.T) {
	d := smallTree(t)
	want, _, err := Build(d, ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := bumpMtime(filepath.Join(d, "f"), 12345); err != nil {
		t.Fatal(err)
	}
	got, _, err := Build(d, ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diffs := Compare(want, got, CompareOptions{}); len(diffs) != 1 || !strings.Contains(diffs[0], "f: mtime") {
		t.Fatalf("differences %q, want one mtime of f", diffs)
	}
	if diffs := Compare(want, got, CompareOptions{IgnoreMtime: true}); len(diffs) != 0 {
		t.Fatalf("IgnoreMtime: differences %q", diffs)
	}
}

// TestCompareDevices: device numbers are recorded and compared.
func TestCompareDevices(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "mknod of devices needs root")
	}
	d := t.TempDir()
	mk := func(typ uint32, minor uint32) {
		t.Helper()
		p := filepath.Join(d, "dev")
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := unix.Mknod(p, typ|0o600, int(unix.Mkdev(7, minor))); err != nil {
			t.Fatal(err)
		}
		if err := unix.UtimesNano(p, []unix.Timespec{{Sec: 1}, {Sec: 1}}); err != nil {
			t.Fatal(err)
		}
		if err := unix.UtimesNano(d, []unix.Timespec{{Sec: 1}, {Sec: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	mk(unix.S_IFBLK, 3)
	want, _, err := Build(d, ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e := want.Entries[1]; e.Type != TypeBlock || e.Rdev != unix.Mkdev(7, 3) {
		t.Fatalf("entry %+v, want block device 7:3", e)
	}
	mk(unix.S_IFBLK, 4)
	got, _, err := Build(d, ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diffs := Compare(want, got, CompareOptions{}); len(diffs) != 1 || diffs[0] != "dev: device 7:4, want 7:3" {
		t.Fatalf("differences %q, want one device number", diffs)
	}
}

func TestBuildHardLinksAndSub(t *testing.T) {
	d := smallTree(t)
	m, st, err := Build(d, ManifestOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 7 || st.Files != 4 {
		t.Fatalf("stats %+v, want 7 entries and 4 files", st)
	}
	byPath := map[string]Entry{}
	for _, e := range m.Entries {
		byPath[e.Path] = e
	}
	if byPath["h1"].LinkOf != "" || byPath["h2"].LinkOf != "h1" {
		t.Fatalf("hard links: h1 -> %q, h2 -> %q", byPath["h1"].LinkOf, byPath["h2"].LinkOf)
	}
	sub := m.Sub("sub")
	if len(sub.Entries) != 2 || sub.Entries[0].Path != "." || sub.Entries[1].Path != "g" {
		t.Fatalf("Sub: %+v", sub.Entries)
	}
	if m.WithoutSums().Entries[0].Sum != "" || byPath["f"].Sum == "" {
		t.Fatal("WithoutSums/Sum")
	}
}

// TestMutateMatchesReference applies the guest's mutations to two copies
// of the base: the trees must be identical (the reference the host uses),
// and clearly different from the base.
func TestMutateMatchesReference(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "Mutate chowns: needs root")
	}
	opts := ManifestOptions{Hash: true, Xattrs: true}
	var ms []*Manifest
	for range 2 {
		d := t.TempDir()
		if err := MutationBase(d); err != nil {
			t.Fatal(err)
		}
		if err := Mutate(d); err != nil {
			t.Fatal(err)
		}
		m, _, err := Build(d, opts)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	if d := Compare(ms[0], ms[1], CompareOptions{Xattrs: true, IgnoreMtime: true}); len(d) > 0 {
		t.Fatalf("two applications differ: %v", d)
	}
	base := t.TempDir()
	if err := MutationBase(base); err != nil {
		t.Fatal(err)
	}
	bm, _, err := Build(base, opts)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(bm, ms[0], CompareOptions{}); len(d) < 10 {
		t.Fatalf("the mutations changed too little: %v", d)
	}
	// a second Mutate on the same tree must fail (creates are exclusive)
	d := t.TempDir()
	if err := MutationBase(d); err != nil {
		t.Fatal(err)
	}
	if err := Mutate(d); err != nil {
		t.Fatal(err)
	}
	if err := Mutate(d); err == nil {
		t.Fatal("Mutate twice succeeded")
	}
}

func TestXattrOpsOnHost(t *testing.T) {
	d := t.TempDir()
	if err := XattrBase(d); err != nil {
		testenv.Skipf(t, "no user xattrs: %v", err)
	}
	if errs := CheckXattrsOnHost(d); len(errs) == 0 {
		t.Fatal("CheckXattrsOnHost passed before XattrOps ran")
	}
	if errs := XattrOps(d); len(errs) > 0 {
		t.Fatal(errs)
	}
	if errs := CheckXattrsOnHost(d); len(errs) > 0 {
		t.Fatal(errs)
	}
}

func TestWalkDirMatchesReadDir(t *testing.T) {
	d := t.TempDir()
	for i := range 300 {
		name := strings.Repeat("n", 1+i%200) + string(rune('a'+i%26)) + string(rune('0'+i/26))
		if err := os.WriteFile(filepath.Join(d, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	if err := sysWalkDir(d, func(n string) error { seen[n] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(want) {
		t.Fatalf("sysWalkDir saw %d names, ReadDir %d", len(seen), len(want))
	}
	for _, e := range want {
		if !seen[e.Name()] {
			t.Fatalf("sysWalkDir missed %q", e.Name())
		}
	}
	if got := parseDirents([]byte{1, 2, 3}, nil); len(got) != 0 {
		t.Fatalf("short buffer gave %q", got)
	}
}
