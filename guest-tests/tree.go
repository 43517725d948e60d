package guesttests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

// MakeSpecialTree writes, into dir (created), a tree meant to trip a
// filesystem up: unicode names, 255-byte names (ASCII and multi-byte),
// deep directories and a path near PATH_MAX, symlinks (relative, absolute,
// dangling, to a directory, to itself, a long target), hard links, an empty
// file, a sparse file, a FIFO, odd modes (setuid, sticky, read-only,
// private), several owners and a bigMiB MiB file of seeded random data.
func MakeSpecialTree(dir string, bigMiB int) error {
	type file struct {
		path      string
		data      []byte
		mode      os.FileMode
		uid, gid  int
		extraMode uint32 // setuid/setgid/sticky
	}
	files := []file{
		{path: "empty", mode: 0o644},
		{path: "hello.txt", data: []byte("hello, virtio-fs\n"), mode: 0o644, uid: 1000, gid: 1000},
		{path: "ünïcødé ☃ 名前 🙂.txt", data: []byte("unicode\n"), mode: 0o640, uid: 1234, gid: 5678},
		{path: strings.Repeat("n", 255), data: []byte("255 ascii bytes\n"), mode: 0o600},
		{path: strings.Repeat("界", 85), data: []byte("255 utf-8 bytes\n"), mode: 0o644},
		{path: "exec.sh", data: []byte("#!/bin/sh\necho hi\n"), mode: 0o755},
		{path: "setuid", data: []byte("suid\n"), mode: 0o755, extraMode: unix.S_ISUID},
		{path: "readonly.txt", data: []byte("read only\n"), mode: 0o444, uid: 65534, gid: 65534},
		{path: "medium.bin", data: check.SeededBytes(3, 1<<20+4321), mode: 0o644},
		{path: "hard/a", data: []byte("three names, one inode\n"), mode: 0o644, uid: 1000, gid: 100},
		{path: "hard/solo", data: []byte("one name\n"), mode: 0o644},
	}
	deep := "deep"
	for i := 1; i <= 32; i++ {
		deep = filepath.Join(deep, fmt.Sprintf("d%02d", i))
	}
	files = append(files, file{path: filepath.Join(deep, "leaf.txt"), data: []byte("deep leaf\n"), mode: 0o644})
	long := "long"
	for i := 0; i < 16; i++ {
		long = filepath.Join(long, strings.Repeat(string(rune('A'+i)), 200))
	}
	files = append(files, file{path: filepath.Join(long, "leaf.txt"), data: []byte("near PATH_MAX\n"), mode: 0o644})

	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("special tree: %w", err)
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return fmt.Errorf("special tree: %w", err)
		}
		if err := os.Chown(p, f.uid, f.gid); err != nil {
			return fmt.Errorf("special tree: %w", err)
		}
		// chmod after chown: chown clears setuid
		if err := unix.Chmod(p, uint32(f.mode.Perm())|f.extraMode); err != nil {
			return fmt.Errorf("special tree: %w", err)
		}
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"big file", func() error { return writeSeeded(filepath.Join(dir, "big.bin"), 7, int64(bigMiB)<<20) }},
		{"sparse file", func() error { return writeSparse(filepath.Join(dir, "sparse.bin"), 16<<20) }},
		{"fifo", func() error { return unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644) }},
		{"links dir", func() error { return os.Mkdir(filepath.Join(dir, "links"), 0o755) }},
		{"relative symlink", func() error { return os.Symlink("../hello.txt", filepath.Join(dir, "links/rel")) }},
		{"absolute symlink", func() error { return os.Symlink("/etc/passwd", filepath.Join(dir, "links/abs")) }},
		{"dangling symlink", func() error { return os.Symlink("does/not/exist", filepath.Join(dir, "links/dangling")) }},
		{"directory symlink", func() error { return os.Symlink("../deep", filepath.Join(dir, "links/dir")) }},
		{"self loop", func() error { return os.Symlink("self", filepath.Join(dir, "links/self")) }},
		{"long target", func() error {
			return os.Symlink(strings.Repeat("x/", 511)+"end", filepath.Join(dir, "links/long-target"))
		}},
		{"symlink owner", func() error { return os.Lchown(filepath.Join(dir, "links/rel"), 1000, 1000) }},
		{"hard link b", func() error { return os.Link(filepath.Join(dir, "hard/a"), filepath.Join(dir, "hard/b")) }},
		{"hard link sub/c", func() error {
			if err := os.Mkdir(filepath.Join(dir, "hard/sub"), 0o755); err != nil {
				return err
			}
			return os.Link(filepath.Join(dir, "hard/a"), filepath.Join(dir, "hard/sub/c"))
		}},
		{"sticky dir", func() error { return mkdirMode(filepath.Join(dir, "sticky"), 0o777|unix.S_ISVTX, 0, 0) }},
		{"private dir", func() error { return mkdirMode(filepath.Join(dir, "private"), 0o700, 1000, 1000) }},
		{"file in private dir", func() error {
			return os.WriteFile(filepath.Join(dir, "private/secret"), []byte("s\n"), 0o600)
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("special tree: %s: %w", s.what, err)
		}
	}
	return nil
}

func mkdirMode(p string, mode uint32, uid, gid int) error {
	if err := os.Mkdir(p, 0o755); err != nil {
		return err
	}
	if err := os.Chown(p, uid, gid); err != nil {
		return err
	}
	return unix.Chmod(p, mode)
}

// writeSeeded writes n bytes of seeded pseudo-random data, 4 MiB at a time.
func writeSeeded(p string, seed uint64, n int64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	const chunk = 4 << 20
	for off, i := int64(0), uint64(0); off < n; off, i = off+chunk, i+1 {
		if _, err := f.Write(check.SeededBytes(seed<<32+i, int(min(chunk, n-off)))); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// writeSparse makes a file of size bytes with data only at the start, the
// middle and the end.
func writeSparse(p string, size int64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	for i, off := range []int64{0, size / 2, size - 4096} {
		if _, err := f.WriteAt(check.SeededBytes(uint64(100+i), 4096), off); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// MakeManyFiles writes n small files (0..199 bytes of seeded data) into
// dir, 100 per directory (dir/dNNN/fNNN).
func MakeManyFiles(dir string, n int) error {
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return fmt.Errorf("many files: %w", err)
			}
		}
		p := filepath.Join(sub, fmt.Sprintf("f%03d", i%100))
		if err := os.WriteFile(p, check.SeededBytes(uint64(1000+i), (i*37)%200), 0o644); err != nil {
			return fmt.Errorf("many files: %w", err)
		}
	}
	return nil
}
