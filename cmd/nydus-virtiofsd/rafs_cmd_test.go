package main

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

const fixtures = "../../rafs/testdata/fixtures/nydus"

func TestRafsSubcommands(t *testing.T) {
	bin := buildBinary(t)
	v6 := filepath.Join(fixtures, "v6-2.2")
	boot := filepath.Join(v6, "rafs-v6-2.2.boot")
	t.Run("check", func(t *testing.T) {
		out, err := exec.Command(bin, "check", "--bootstrap", boot, "--blob-dir="+v6).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "chunks verified: 2") {
			t.Fatalf("check: %v\n%s", err, out)
		}
	})
	t.Run("check corrupt blob", func(t *testing.T) {
		dir := t.TempDir()
		blob, err := os.ReadFile(filepath.Join(v6, "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"))
		if err != nil {
			t.Fatal(err)
		}
		// The digest of chunk 1 in the blob.digest array (ci order, at 12954).
		blob[12954+32] ^= 0xff
		os.WriteFile(filepath.Join(dir, "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"), blob, 0o644)
		out, err := exec.Command(bin, "check", "--bootstrap", boot, "--blob-dir", dir).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "toc entry blob.digest: sha256") {
			t.Fatalf("check of a corrupt blob: %v\n%s", err, out)
		}
	})
	t.Run("check not an image", func(t *testing.T) {
		out, err := exec.Command(bin, "check", "--bootstrap", "rafs_cmd_test.go").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no RAFS v5/v6 magic") {
			t.Fatalf("check: %v\n%s", err, out)
		}
	})
	t.Run("unpack", func(t *testing.T) {
		tarPath := filepath.Join(t.TempDir(), "out.tar")
		out, err := exec.Command(bin, "unpack", "--bootstrap", boot, "--blob-dir", v6, "--output", tarPath).CombinedOutput()
		if err != nil {
			t.Fatalf("unpack: %v\n%s", err, out)
		}
		data, _ := os.ReadFile(tarPath)
		tr := tar.NewReader(bytes.NewReader(data))
		var names []string
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			names = append(names, h.Name)
		}
		if strings.Join(names, " ") != "./ lib.rs sync_io.rs" { // the root entry first
			t.Errorf("tar holds %v", names)
		}
	})
	t.Run("fuse", func(t *testing.T) {
		if os.Geteuid() != 0 {
			testenv.Skip(t, "needs root for a direct FUSE mount")
		}
		mnt := t.TempDir()
		cfg := filepath.Join(t.TempDir(), "config.json")
		abs, _ := filepath.Abs(v6)
		os.WriteFile(cfg, []byte(`{"device":{"backend":{"type":"localfs","config":{"dir":"`+abs+`"}}},"mode":"direct","digest_validate":true}`), 0o644)
		cmd := exec.Command(bin, "fuse", "--bootstrap", boot, "--config", cfg, "--mountpoint", mnt)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		mounted := false
		for i := 0; i < 200 && !mounted; i++ {
			if _, err := os.Stat(filepath.Join(mnt, "lib.rs")); err == nil {
				mounted = true
			} else {
				time.Sleep(25 * time.Millisecond)
			}
		}
		if !mounted {
			t.Fatalf("not mounted after 5 s: %s", stderr.String())
		}
		out, err := exec.Command("md5sum", filepath.Join(mnt, "lib.rs"), filepath.Join(mnt, "sync_io.rs")).Output()
		if err != nil || !strings.Contains(string(out), "4709cf8873e419ecedc7d43fdee4a75f") || !strings.Contains(string(out), "5442bc7dc9dc5f985c7594e23866ae6f") {
			t.Errorf("md5sum: %v %s", err, out)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("fuse exited with %v: %s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("fuse did not exit on SIGTERM")
		}
		if _, err := os.Stat(filepath.Join(mnt, "lib.rs")); err == nil {
			t.Error("still mounted after SIGTERM")
		}
	})
	t.Run("fuse bad registry config", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "config.json")
		os.WriteFile(cfg, []byte(`{"version":2,"backend":{"type":"registry","registry":{"host":"r"}}}`), 0o644)
		out, err := exec.Command(bin, "fuse", "--bootstrap", boot, "--config", cfg, "--mountpoint", t.TempDir()).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "registry backend needs host and repo") {
			t.Fatalf("fuse with a registry backend without repo: %v\n%s", err, out)
		}
	})
}
