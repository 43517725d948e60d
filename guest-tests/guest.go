package guesttests

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

// Guest is a bootable guest: an uncompressed kernel (booted through its PVH
// entry) and an initramfs whose /init is guestinit.
type Guest struct {
	Kernel        string   // vmlinux (ELF with a PVH note)
	Initramfs     string   // gzip'd newc cpio
	KernelPackage string   // e.g. linux-image-6.1.0-56-amd64 6.1.192-2
	KernelRelease string   // e.g. 6.1.0-56-amd64
	Modules       []string // load order
}

// guestModules are the top-level modules the guest needs; their
// dependencies are read from each .ko's modinfo.
func guestModules() []string { return []string{"virtio_pci", "virtiofs"} }

// BuildOptions tell BuildGuest where to cache and what to pin.
type BuildOptions struct {
	CacheDir      string // default: <module root>/guest-tests/.cache
	KernelPackage string // default: what linux-image-amd64 depends on
	ModuleRoot    string // the Go module root (for building guestinit); default: found from the cwd
	Busybox       bool   // add the host's static busybox as /bin/busybox and /bin/sh (debugging)
	// ExtraModules are top-level modules loaded after the virtio-fs ones
	// (with their dependencies), e.g. "overlay" for Kata's container rootfs.
	ExtraModules []string
	Log          logrus.FieldLogger
}

// BuildGuest downloads and unpacks the kernel package (once), extracts
// vmlinux from the bzImage (once per kernel), builds guestinit and writes the
// initramfs. Each artefact is cached under CacheDir keyed by its inputs.
func BuildGuest(ctx context.Context, o BuildOptions) (*Guest, error) {
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.ModuleRoot == "" {
		root, err := ModuleRoot()
		if err != nil {
			return nil, err
		}
		o.ModuleRoot = root
	}
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(o.ModuleRoot, "guest-tests", ".cache")
	}
	if err := os.MkdirAll(filepath.Join(o.CacheDir, "debs"), 0o755); err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	unlock, err := lockCache(o.CacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	kroot, g, err := kernelTree(ctx, o)
	if err != nil {
		return nil, err
	}
	g.Kernel = filepath.Join(o.CacheDir, "vmlinux-"+g.KernelRelease)
	if _, err := os.Stat(g.Kernel); err != nil {
		o.Log.Infof("guest: extracting vmlinux from vmlinuz-%s", g.KernelRelease)
		if err := extractVmlinux(filepath.Join(kroot, "boot", "vmlinuz-"+g.KernelRelease), g.Kernel); err != nil {
			return nil, err
		}
	}
	modDir := filepath.Join(kroot, "lib", "modules", g.KernelRelease)
	mods, err := resolveModules(modDir, append(guestModules(), o.ExtraModules...))
	if err != nil {
		return nil, err
	}
	g.Modules = mods
	initBin := filepath.Join(o.CacheDir, "guestinit")
	if err := goBuild(ctx, o.ModuleRoot, "./guest-tests/guestinit", initBin, true); err != nil {
		return nil, err
	}
	img, err := writeInitramfs(o.CacheDir, initBin, modDir, mods, o.Busybox)
	if err != nil {
		return nil, err
	}
	g.Initramfs = img
	return g, nil
}

// ModuleRoot finds the directory holding go.mod, from the working directory up.
func ModuleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", errors.New("no go.mod above the working directory")
		}
		d = p
	}
}

// kernelTree makes sure the kernel package is downloaded and unpacked, and
// returns the unpacked tree.
func kernelTree(ctx context.Context, o BuildOptions) (string, *Guest, error) {
	pkg := o.KernelPackage
	if pkg == "" {
		var err error
		if pkg, err = kernelABIPackage(ctx); err != nil || pkg == "" {
			// no package lists yet (a fresh machine)
			if uerr := aptUpdate(ctx); uerr != nil {
				return "", nil, uerr
			}
			if pkg, err = kernelABIPackage(ctx); err != nil {
				return "", nil, err
			}
		}
		if pkg == "" {
			return "", nil, errors.New("cannot resolve linux-image-amd64 to its ABI package")
		}
	}
	deb, ver, err := fetchDeb(ctx, filepath.Join(o.CacheDir, "debs"), pkg, o.Log)
	if err != nil {
		return "", nil, err
	}
	kroot := filepath.Join(o.CacheDir, "kernel-"+pkg+"-"+ver)
	if _, err := os.Stat(filepath.Join(kroot, "boot")); err != nil {
		o.Log.Infof("guest: unpacking %s", filepath.Base(deb))
		tmp, err := os.MkdirTemp(o.CacheDir, "kernel.tmp.")
		if err != nil {
			return "", nil, err
		}
		defer os.RemoveAll(tmp)
		if _, err := runOut(ctx, "dpkg-deb", "-x", deb, tmp); err != nil {
			return "", nil, err
		}
		_ = os.RemoveAll(kroot) // a partial tree without boot/
		if err := os.Rename(tmp, kroot); err != nil {
			return "", nil, err
		}
	}
	rels, err := os.ReadDir(filepath.Join(kroot, "lib", "modules"))
	if err != nil || len(rels) != 1 {
		return "", nil, fmt.Errorf("kernel tree %s: want one lib/modules/<release>: %v", kroot, err)
	}
	return kroot, &Guest{KernelPackage: pkg + " " + ver, KernelRelease: rels[0].Name()}, nil
}

// kernelABIPackage resolves linux-image-amd64 to the package it depends on
// (e.g. linux-image-6.1.0-56-amd64); "" when apt knows none.
func kernelABIPackage(ctx context.Context) (string, error) {
	out, err := runOut(ctx, "apt-cache", "depends", "linux-image-amd64")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			return f[1], nil
		}
	}
	return "", nil
}

// fetchDeb returns the cached .deb of name's candidate version, downloading
// it with apt-get when missing. Files are matched on their Version field:
// apt-get download writes an epoch "1:" as "1%3a" in the file name.
func fetchDeb(ctx context.Context, dir, name string, log logrus.FieldLogger) (string, string, error) {
	candidate := func() (string, error) {
		pol, err := runOut(ctx, "apt-cache", "policy", name)
		if err != nil {
			return "", err
		}
		for _, l := range strings.Split(pol, "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "Candidate:" && f[1] != "(none)" {
				return f[1], nil
			}
		}
		return "", nil
	}
	ver, err := candidate()
	if err == nil && ver == "" {
		// no package lists yet (a fresh machine)
		if err = aptUpdate(ctx); err == nil {
			ver, err = candidate()
		}
	}
	if err != nil {
		return "", "", err
	}
	if ver == "" {
		return "", "", fmt.Errorf("no candidate version of %s in the apt lists", name)
	}
	find := func() string {
		ms, _ := filepath.Glob(filepath.Join(dir, name+"_*.deb"))
		for _, m := range ms {
			if v, err := runOut(ctx, "dpkg-deb", "-f", m, "Version"); err == nil && strings.TrimSpace(v) == ver {
				return m
			}
		}
		return ""
	}
	if p := find(); p != "" {
		return p, ver, nil
	}
	log.Infof("guest: downloading %s %s", name, ver)
	cmd := exec.CommandContext(ctx, "apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", name+"="+ver)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("apt-get download %s=%s: %w\n%s", name, ver, err, out)
	}
	if p := find(); p != "" {
		return p, ver, nil
	}
	return "", "", fmt.Errorf("apt-get download %s=%s left no matching .deb in %s", name, ver, dir)
}

func runOut(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// extractVmlinux unpacks the compressed kernel inside a bzImage: the x86
// boot protocol (2.08+) gives payload_offset and payload_length in the setup
// header, relative to the protected-mode code after the setup sectors. The
// result must be an ELF with a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY).
func extractVmlinux(bzImage, out string) error {
	b, err := os.ReadFile(bzImage)
	if err != nil {
		return fmt.Errorf("vmlinuz: %w", err)
	}
	if len(b) < 0x250 || string(b[0x202:0x206]) != "HdrS" {
		return fmt.Errorf("%s: not a bzImage", bzImage)
	}
	setupSects := int(b[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	pm := (setupSects + 1) * 512
	off := pm + int(binary.LittleEndian.Uint32(b[0x248:]))
	n := int(binary.LittleEndian.Uint32(b[0x24c:]))
	if off < pm || off+n > len(b) {
		return fmt.Errorf("%s: payload %d+%d outside the file", bzImage, off, n)
	}
	payload := b[off : off+n]
	var r io.Reader
	switch {
	case bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")):
		// The kernel's xz stream uses the x86 BCJ filter, which the Go xz
		// packages do not decode: use xz(1) (xz-utils).
		if _, err := exec.LookPath("xz"); err != nil {
			return fmt.Errorf("the kernel is xz-compressed and xz is missing (apt-get install xz-utils): %w", err)
		}
		cmd := exec.Command("xz", "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(payload)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("xz -d of the kernel payload: %w: %s", err, stderr.String())
		}
		r = bytes.NewReader(out)
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		gr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return fmt.Errorf("vmlinuz gzip payload: %w", err)
		}
		gr.Multistream(false)
		r = gr
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(bytes.NewReader(payload))
		if err != nil {
			return fmt.Errorf("vmlinuz zstd payload: %w", err)
		}
		defer zr.Close()
		r = zr
	default:
		return fmt.Errorf("%s: unknown payload compression % x", bzImage, payload[:min(8, len(payload))])
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return fmt.Errorf("unpack vmlinux: %w", err)
	}
	if err := checkPVH(buf.Bytes()); err != nil {
		return err
	}
	return writeFileAtomic(out, buf.Bytes(), 0o644)
}

// checkPVH makes sure the ELF has the note QEMU needs to boot it via PVH.
func checkPVH(img []byte) error {
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return fmt.Errorf("vmlinux is not an ELF: %w", err)
	}
	const xenElfnotePhys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		d := make([]byte, p.Filesz)
		if _, err := p.ReadAt(d, 0); err != nil {
			continue
		}
		for len(d) >= 12 {
			nsz := int(binary.LittleEndian.Uint32(d))
			dsz := int(binary.LittleEndian.Uint32(d[4:]))
			typ := binary.LittleEndian.Uint32(d[8:])
			end := 12 + align4(nsz) + align4(dsz)
			if end > len(d) {
				break
			}
			if typ == xenElfnotePhys32Entry && strings.HasPrefix(string(d[12:12+nsz]), "Xen") {
				return nil
			}
			d = d[end:]
		}
	}
	return errors.New("vmlinux has no PVH entry note (CONFIG_PVH): QEMU cannot boot it directly")
}

func align4(n int) int { return (n + 3) &^ 3 }

// writeFileAtomic writes p through a unique temporary file and a rename, so
// a reader (another test process) never sees a partial file.
func writeFileAtomic(p string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".tmp.")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), mode)
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// lockCache takes an exclusive lock on the cache directory, so that
// concurrent test processes do not build into it at the same time.
func lockCache(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("cache lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// resolveModules returns the .ko paths (relative to modDir) to load, in
// dependency order, for the wanted modules; dependencies come from the
// "depends=" field of each module's .modinfo section (there is no
// modules.dep in an unpacked package: depmod runs at install time).
func resolveModules(modDir string, want []string) ([]string, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(filepath.Join(modDir, "kernel"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			rel, _ := filepath.Rel(modDir, p)
			paths[strings.ReplaceAll(strings.TrimSuffix(d.Name(), ".ko"), "-", "_")] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	builtin, _ := os.ReadFile(filepath.Join(modDir, "modules.builtin"))
	var order []string
	seen := map[string]bool{}
	var visit func(m string) error
	visit = func(m string) error {
		m = strings.ReplaceAll(m, "-", "_")
		if seen[m] {
			return nil
		}
		seen[m] = true
		rel, ok := paths[m]
		if !ok {
			if bytes.Contains(bytes.ReplaceAll(builtin, []byte("-"), []byte("_")), []byte("/"+m+".ko")) {
				return nil
			}
			return fmt.Errorf("module %s: neither a .ko nor built in", m)
		}
		deps, err := moduleDepends(filepath.Join(modDir, rel))
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		order = append(order, rel)
		return nil
	}
	for _, m := range want {
		if err := visit(m); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func moduleDepends(ko string) ([]string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", ko, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("module %s: no .modinfo", ko)
	}
	d, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", ko, err)
	}
	for _, kv := range bytes.Split(d, []byte{0}) {
		if v, ok := strings.CutPrefix(string(kv), "depends="); ok {
			if v == "" {
				return nil, nil
			}
			return strings.Split(v, ","), nil
		}
	}
	return nil, nil
}

// goBuild builds pkg (relative to root) into out; guest means a binary for
// the guest: CGO_ENABLED=0, stripped, with check.GuestTag (raw system calls).
// The binary is built beside out and renamed over it: a running copy (a
// daemon another test started) keeps its inode.
func goBuild(ctx context.Context, root, pkg, out string, guest bool) error {
	tmpDir, err := os.MkdirTemp(filepath.Dir(out), "build.tmp.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, filepath.Base(out))
	args := []string{"build", "-o", tmp}
	if guest {
		args = append(args, "-trimpath", "-ldflags=-s -w", "-tags="+check.GuestTag)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = root
	cmd.Env = os.Environ()
	if guest {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return os.Rename(tmp, out)
}

// writeInitramfs writes (or reuses) the base initramfs, named by the hash of
// its content: /init, the modules and their load order, /dev/console and
// /dev/null, and optionally the host's static busybox (for debugging only:
// the checks are Go).
func writeInitramfs(cacheDir, initBin, modDir string, mods []string, withBusybox bool) (string, error) {
	type file struct {
		name string
		perm uint32
		data []byte
	}
	var files []file
	initData, err := os.ReadFile(initBin)
	if err != nil {
		return "", err
	}
	files = append(files, file{"init", 0o755, initData})
	var order []string
	for _, m := range mods {
		d, err := os.ReadFile(filepath.Join(modDir, m))
		if err != nil {
			return "", err
		}
		name := filepath.Base(m)
		files = append(files, file{"lib/modules/" + name, 0o644, d})
		order = append(order, name)
	}
	files = append(files, file{"lib/modules/load-order", 0o644, []byte(strings.Join(order, "\n") + "\n")})
	var bb []byte
	if withBusybox {
		if bb = staticBusybox(); bb == nil {
			return "", errors.New("no static busybox on the host (apt-get install busybox-static)")
		}
		files = append(files, file{"bin/busybox", 0o755, bb})
	}
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s %o %d\n", f.name, f.perm, len(f.data))
		h.Write(f.data)
	}
	img := filepath.Join(cacheDir, "initramfs-"+hex.EncodeToString(h.Sum(nil))[:16]+".img")
	if _, err := os.Stat(img); err == nil {
		// in use again: not stale (see below)
		now := time.Now()
		_ = os.Chtimes(img, now, now)
		return img, nil
	}
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	c := newCPIOWriter(gz)
	for _, d := range []string{"bin", "dev", "harness", "lib", "lib/modules", "mnt", "proc", "sys", "tmp"} {
		c.Dir(d, 0o755)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.CharDev("dev/null", 0o666, 1, 3)
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	for _, f := range files {
		c.File(f.name, f.perm, f.data)
	}
	if bb != nil {
		c.Symlink("bin/sh", "busybox")
	}
	if err := c.Close(); err != nil {
		return "", err
	}
	if err := gz.Close(); err != nil {
		return "", err
	}
	if err := writeFileAtomic(img, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	removeStaleInitramfs(cacheDir, img, time.Now().Add(-staleInitramfs))
	return img, nil
}

// staleInitramfs is how long an initramfs image other than the newest is
// kept after it was last written or reused: another test process (one
// started from another state of the tree, or with Busybox) may still be
// booting it, so images are not removed as soon as a newer one appears.
const staleInitramfs = 2 * time.Hour

// removeStaleInitramfs removes the initramfs images in cacheDir, other than
// keep, last written or reused before cutoff.
func removeStaleInitramfs(cacheDir, keep string, cutoff time.Time) {
	old, _ := filepath.Glob(filepath.Join(cacheDir, "initramfs-*.img"))
	for _, o := range old {
		if st, err := os.Stat(o); err == nil && o != keep && st.ModTime().Before(cutoff) {
			_ = os.Remove(o)
		}
	}
}

// staticBusybox returns the host's busybox if it is statically linked.
func staticBusybox() []byte {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, pr := range f.Progs {
			if pr.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			b, err := os.ReadFile(p)
			if err == nil {
				return b
			}
		}
	}
	return nil
}

// overlayCPIO returns a gzip'd cpio holding the given files (path -> data)
// to concatenate after the base initramfs (the kernel unpacks both).
func overlayCPIO(files map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	c := newCPIOWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c.File(n, 0o644, files[n])
	}
	if err := c.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
