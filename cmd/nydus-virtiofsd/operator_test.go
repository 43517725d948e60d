package main

// Operator-experience tests (issue 16): each numbered finding, through the
// real binary.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// runBin runs the binary to completion and returns its combined output and
// exit code.
func runBin(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(buildBinary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%v: %v", args, err)
	return "", -1
}

// v6Image is the nydus-image 2.2 fixture: its bootstrap, blob dir and blob id.
func v6Image(t *testing.T) (boot, dir, blobID string) {
	t.Helper()
	dir, _ = filepath.Abs(filepath.Join(fixtures, "v6-2.2"))
	return filepath.Join(dir, "rafs-v6-2.2.boot"), dir, "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
}

// Item 1: a second instance must not take over a live socket.
func TestSocketTakeover(t *testing.T) {
	bin := buildBinary(t)
	share := shareDir(t)
	t.Run("second daemon on a live vhost-user socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "vfs.sock")
		first := startDaemon(t, bin, nil, "--socket-path="+sock, "--shared-dir="+share, "--sandbox=none")
		out, code := runBin(t, "", "--socket-path="+sock, "--shared-dir="+share, "--sandbox=none")
		if code != exitFailure || !strings.Contains(out, "in use by another daemon") || !strings.Contains(out, fmt.Sprint(first.cmd.Process.Pid)) {
			t.Fatalf("second instance: exit %d, %q; want exit 1 naming the first daemon's pid", code, out)
		}
		drv, c := connectFUSE(t, first, sock, testdriver.QEMU) // the first still serves
		if got := readFile(t, c, "hello.txt"); got != "hello, guest\n" {
			t.Fatalf("first daemon read = %q", got)
		}
		drv.Close()
		first.wait(t, 5*time.Second)
		if _, err := os.Stat(sock + ".pid"); !os.IsNotExist(err) {
			t.Errorf("pid file left behind: %v", err)
		}
	})
	t.Run("namespace sandbox holds the socket too", func(t *testing.T) {
		if os.Geteuid() != 0 {
			testenv.Skip(t, "needs root (namespaces)")
		}
		sock := filepath.Join(t.TempDir(), "vfs.sock")
		startDaemon(t, bin, nil, "--socket-path="+sock, "--shared-dir="+share)
		out, code := runBin(t, "", "--socket-path="+sock, "--shared-dir="+share)
		if code != exitFailure || !strings.Contains(out, "in use by another daemon") {
			t.Fatalf("second instance: exit %d, %q", code, out)
		}
	})
	t.Run("another program listening", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "vfs.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		out, code := runBin(t, "", "--socket-path="+sock, "--shared-dir="+share, "--sandbox=none")
		if code != exitFailure || !strings.Contains(out, "another daemon is listening on this socket") {
			t.Fatalf("exit %d, %q", code, out)
		}
		if _, err := os.Stat(sock); err != nil {
			t.Fatalf("the listener's socket was removed: %v", err)
		}
	})
	t.Run("stale socket and pid file are taken over", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "vfs.sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		os.WriteFile(sock+".pid", []byte("999999\n"), 0o600)
		d := startDaemon(t, bin, nil, "--socket-path="+sock, "--shared-dir="+share, "--sandbox=none")
		drv, c := connectFUSE(t, d, sock, testdriver.QEMU)
		if got := readFile(t, c, "hello.txt"); got != "hello, guest\n" {
			t.Fatalf("read = %q", got)
		}
		drv.Close()
		d.wait(t, 5*time.Second)
	})
	t.Run("virtiofs --apisock of a live daemon", func(t *testing.T) {
		dir := t.TempDir()
		api := filepath.Join(dir, "api.sock")
		startDaemon(t, bin, nil, "virtiofs", "--sock", filepath.Join(dir, "a.sock"), "--apisock", api)
		out, code := runBin(t, "", "virtiofs", "--sock", filepath.Join(dir, "b.sock"), "--apisock", api)
		if code != exitFailure || !strings.Contains(out, "another daemon serves its API on this socket") {
			t.Fatalf("exit %d, %q", code, out)
		}
		if c, _ := apiDo(t, apiClient(api), "GET", "/api/v1/daemon", ""); c != 200 {
			t.Fatalf("the first daemon's API answers %d", c)
		}
	})
	t.Run("help says what happens", func(t *testing.T) {
		out, _ := runBin(t, "", "--help")
		if !strings.Contains(out, "refuses to start") || !strings.Contains(out, "a stale socket file is removed") {
			t.Fatalf("--help: %s", out)
		}
	})
}

// Item 2: missing blobs are caught at mount, naming the blob and where it
// was looked for.
func TestMissingBlobs(t *testing.T) {
	boot, dir, id := v6Image(t)
	missing := filepath.Join(t.TempDir(), "nonexistent")
	wantNamed := func(t *testing.T, out string) {
		t.Helper()
		if !strings.Contains(out, id) || !strings.Contains(out, missing) {
			t.Fatalf("output does not name blob %s and %s:\n%s", id, missing, out)
		}
		if strings.Count(out, id) != 1 {
			t.Errorf("blob id said %d times:\n%s", strings.Count(out, id), out)
		}
	}
	t.Run("daemon", func(t *testing.T) {
		out, code := runBin(t, "", "--socket-path="+filepath.Join(t.TempDir(), "s"), "--bootstrap="+boot, "--blob-dir="+missing)
		if code != exitFailure || strings.Contains(out, waitingLine) {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		wantNamed(t, out)
	})
	t.Run("fuse", func(t *testing.T) {
		out, code := runBin(t, "", "fuse", "--bootstrap", boot, "--blob-dir", missing, "--mountpoint", t.TempDir())
		if code != exitFailure {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		wantNamed(t, out)
	})
	t.Run("check", func(t *testing.T) {
		out, code := runBin(t, "", "check", "--bootstrap", boot, "--blob-dir", missing)
		if code != exitFailure || !strings.Contains(out, "cannot verify the data") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		wantNamed(t, out)
	})
	t.Run("check without a blob source", func(t *testing.T) {
		out, code := runBin(t, "", "check", "--bootstrap", boot)
		if code != 0 || !strings.Contains(out, "data not verified: metadata only") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
	})
	t.Run("API mount", func(t *testing.T) {
		tmp := t.TempDir()
		api := filepath.Join(tmp, "api.sock")
		startDaemon(t, buildBinary(t), nil, "virtiofs", "--sock", filepath.Join(tmp, "v.sock"), "--apisock", api)
		cfg := fmt.Sprintf(`{"device":{"backend":{"type":"localfs","config":{"dir":%q}}},"mode":"direct"}`, missing)
		body := fmt.Sprintf(`{"fs_type":"rafs","source":%q,"config":%q}`, boot, cfg)
		code, resp := apiDo(t, apiClient(api), "POST", "/api/v1/mount?mountpoint=/rafs/c1/lowerdir", body)
		if code != 500 {
			t.Fatalf("mount = %d %s", code, resp)
		}
		wantNamed(t, resp)
	})
	t.Run("default is the bootstrap's directory", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "s")
		d := startDaemon(t, buildBinary(t), nil, "--socket-path="+sock, "--bootstrap="+boot)
		if !strings.Contains(d.log(), "serving RAFS v6 image "+boot) || !strings.Contains(d.log(), dir+" (the bootstrap's directory)") {
			t.Fatalf("log does not say which image and blobs it serves:\n%s", d.log())
		}
		for _, h := range []string{"--help"} {
			out, _ := runBin(t, "", h)
			if !strings.Contains(out, "default: the bootstrap's own directory") {
				t.Errorf("%s does not say where blobs are looked up by default", h)
			}
		}
	})
}

// Item 3: the exit reason logged is the one that happened.
func TestExitReasons(t *testing.T) {
	bin := buildBinary(t)
	share := shareDir(t)
	t.Run("SIGTERM before any frontend", func(t *testing.T) {
		d := startDaemon(t, bin, nil, "--socket-path="+filepath.Join(t.TempDir(), "s"), "--shared-dir="+share, "--sandbox=none")
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.wait(t, 5*time.Second)
		if !strings.Contains(d.log(), "SIGTERM received before any frontend connected, exiting") {
			t.Fatal(d.log())
		}
	})
	t.Run("SIGINT with a frontend", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "s")
		d := startDaemon(t, bin, nil, "--socket-path="+sock, "--shared-dir="+share, "--sandbox=none")
		drv, _ := connectFUSE(t, d, sock, testdriver.QEMU)
		defer drv.Close()
		d.cmd.Process.Signal(syscall.SIGINT)
		d.wait(t, 5*time.Second)
		if !strings.Contains(d.log(), "SIGINT received, exiting") || strings.Contains(d.log(), "frontend disconnected") {
			t.Fatal(d.log())
		}
	})
	t.Run("frontend disconnect", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "s")
		d := startDaemon(t, bin, nil, "--socket-path="+sock, "--shared-dir="+share, "--sandbox=none")
		drv, _ := connectFUSE(t, d, sock, testdriver.QEMU)
		drv.Close()
		d.wait(t, 5*time.Second)
		if !strings.Contains(d.log(), "frontend disconnected, exiting") {
			t.Fatal(d.log())
		}
	})
	t.Run("PUT /api/v1/daemon/exit", func(t *testing.T) {
		tmp := t.TempDir()
		api := filepath.Join(tmp, "api.sock")
		d := startDaemon(t, bin, nil, "virtiofs", "--sock", filepath.Join(tmp, "v.sock"), "--apisock", api)
		if code, body := apiDo(t, apiClient(api), "PUT", "/api/v1/daemon/exit", ""); code != 204 {
			t.Fatalf("exit = %d %s", code, body)
		}
		d.wait(t, 5*time.Second)
		log := d.log()
		if !strings.Contains(log, "exit requested through the API (PUT /api/v1/daemon/exit)") ||
			!strings.Contains(log, "exit requested through the API before any frontend connected, exiting") {
			t.Fatal(log)
		}
	})
}

// Item 4: create says why, detects tar sources, compresses with zstd.
func TestCreateOperator(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte(strings.Repeat("data", 5000)), 0o644)
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Name: "f", Mode: 0o644, Size: 4, Typeflag: tar.TypeReg})
	tw.Write([]byte("data"))
	tw.Close()
	tarFile := filepath.Join(t.TempDir(), "layer.tar")
	os.WriteFile(tarFile, tarBuf.Bytes(), 0o644)
	var gzBuf bytes.Buffer
	gz := gzip.NewWriter(&gzBuf)
	gz.Write(tarBuf.Bytes())
	gz.Close()
	gzFile := filepath.Join(t.TempDir(), "layer.tar.gz")
	os.WriteFile(gzFile, gzBuf.Bytes(), 0o644)
	other := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(other, []byte("not an archive\n"), 0o644)

	tests := []struct {
		name  string
		args  []string
		stdin string
		code  int
		want  string
	}{
		{"no --blob-dir", []string{"--bootstrap", "{out}/boot", src}, "", 2, "--blob-dir (or --blob FILE) is required"},
		{"no --bootstrap", []string{"--blob-dir", "{out}", src}, "", 2, "--bootstrap is required"},
		{"no source", []string{"--bootstrap", "{out}/boot", "--blob-dir", "{out}"}, "", 2, "no SOURCE given"},
		{"two sources", []string{"--bootstrap", "{out}/boot", "--blob-dir", "{out}", src, src}, "", 2, "one SOURCE expected, got 2"},
		{"unknown compressor", []string{"--bootstrap", "{out}/boot", "--blob-dir", "{out}", "--compressor", "brotli", src}, "", 2, "compressor"},
		{"tar detected", []string{"--bootstrap", "{out}/boot", "--blob-dir", "{out}", tarFile}, "", 0, "bootstrap:"},
		{"tar.gz detected", []string{"--bootstrap", "{out}/boot", "--blob-dir", "{out}", gzFile}, "", 0, "bootstrap:"},
		{"tar with --type dir-rafs", []string{"--type", "dir-rafs", "--bootstrap", "{out}/boot", "--blob-dir", "{out}", tarFile}, "", 2, "use --type tar-rafs"},
		{"not an archive", []string{"--bootstrap", "{out}/boot", "--blob-dir", "{out}", other}, "", 1, "neither a directory, a tar nor a tar.gz"},
		{"prefetch fs without a list", []string{"--prefetch-policy", "fs", "--bootstrap", "{out}/boot", "--blob-dir", "{out}", src}, "", 0, "nothing to prefetch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			args := []string{"create"}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "{out}", out))
			}
			got, code := runBin(t, tc.stdin, args...)
			if code != tc.code || !strings.Contains(got, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, got)
			}
			if code == 2 && (strings.Contains(got, "Flags:") || !strings.Contains(got, "nydus-virtiofsd create: ")) {
				t.Errorf("a usage error prints the reason with the prefix, not the whole usage:\n%s", got)
			}
		})
	}
	t.Run("zstd by default", func(t *testing.T) {
		out := t.TempDir()
		if got, code := runBin(t, "", "create", "--bootstrap", out+"/boot", "--blob-dir", out, src); code != 0 {
			t.Fatal(got)
		}
		img, err := rafs.Open(out+"/boot", rafs.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		if c := img.Super().Compression; c != rafs.CompressZstd {
			t.Fatalf("compression %v, want zstd", c)
		}
	})
}

// Item 5: the virtiofs subcommand names its own flags.
func TestVirtiofsModeMessages(t *testing.T) {
	out, code := runBin(t, "", "virtiofs", "--shared-dir", t.TempDir())
	if code != exitUsage || !strings.Contains(out, "nydus-virtiofsd virtiofs: --sock or --fd is required") || strings.Contains(out, "--socket-path") {
		t.Fatalf("exit %d: %s", code, out)
	}
	help, code := runBin(t, "", "virtiofs", "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for name, spec := range nydusdFlags() {
		if spec.set != nil && !strings.Contains(help, "--"+name) {
			t.Errorf("virtiofs --help omits --%s", name)
		}
	}
}

// Item 6: one command-line style.
func TestCommandLineStyle(t *testing.T) {
	t.Run("main help lists every option", func(t *testing.T) {
		help, code := runBin(t, "", "--help")
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		for name := range virtiofsdFlags() {
			if !strings.Contains(help, "--"+name) {
				t.Errorf("--help omits --%s", name)
			}
		}
		for _, c := range commands() {
			if !strings.Contains(help, "  "+c.name+" ") {
				t.Errorf("--help omits subcommand %s", c.name)
			}
		}
	})
	t.Run("subcommand help", func(t *testing.T) {
		for _, c := range commands() {
			out, code := runBin(t, "", c.name, "--help")
			if code != 0 || !strings.Contains(out, "--log-level") || regexp.MustCompile(`(?m)^\s+-[a-z][a-z-]+ `).MatchString(out) {
				t.Errorf("%s --help: exit %d (want 0), --flag style with --log-level:\n%s", c.name, code, out)
			}
		}
	})
	t.Run("help and mistyped subcommands list the subcommands", func(t *testing.T) {
		out, code := runBin(t, "", "help")
		if code != 0 || !strings.Contains(out, subcommandLine("check")) {
			t.Errorf("help: exit %d\n%s", code, out)
		}
		out, code = runBin(t, "", "chekc")
		if code != exitUsage || !strings.Contains(out, `did you mean "check"?`) || !strings.Contains(out, subcommandLine("unpack")) {
			t.Errorf("mistyped: exit %d\n%s", code, out)
		}
		out, code = runBin(t, "", "help", "unpack")
		if code != 0 || !strings.Contains(out, "--digest-validate") {
			t.Errorf("help unpack: exit %d\n%s", code, out)
		}
	})
	t.Run("missing flags: one prefix, exit 2", func(t *testing.T) {
		for _, args := range [][]string{{"check"}, {"unpack", "--bootstrap", "b"}, {"fuse", "--bootstrap", "b"}, {"create", "--blob-dir", "d", "src"}, {"virtiofs", "--apisock", "a"}, {"--shared-dir", "/"}} {
			out, code := runBin(t, "", args...)
			name := prog
			if !strings.HasPrefix(args[0], "-") {
				name += " " + args[0]
			}
			if code != exitUsage || !regexp.MustCompile(`^`+name+`: --[a-z-]+( or --[a-z]+)? is required`).MatchString(out) ||
				!strings.Contains(out, "--help' for usage") {
				t.Errorf("%q: exit %d\n%s", args, code, out)
			}
		}
	})
	t.Run("bad inputs say their cause once", func(t *testing.T) {
		boot, _, _ := v6Image(t)
		missing := filepath.Join(t.TempDir(), "missing")
		for _, tc := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"check", "--bootstrap", boot, "extra"}, exitUsage, `check: unexpected argument "extra": check takes flags only`},
			{[]string{"check", "--bootstrap", missing}, exitFailure, "check: --bootstrap " + missing + ": no such file or directory\n"},
			{[]string{"unpack", "--bootstrap", boot, "--output", filepath.Join(missing, "o.tar")}, exitFailure,
				"unpack: --output " + filepath.Join(missing, "o.tar") + ": no such file or directory\n"},
			{[]string{"--socket-path=" + filepath.Join(t.TempDir(), "s"), "--bootstrap=" + missing}, exitFailure,
				`"--bootstrap ` + missing + `: no such file or directory"`},
		} {
			if out, code := runBin(t, "", tc.args...); code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("%q: exit %d, want %d with %q:\n%s", tc.args, code, tc.code, tc.want, out)
			}
		}
	})
	t.Run("fuse takes nydusd's flags", func(t *testing.T) {
		boot, dir, _ := v6Image(t)
		logFile := filepath.Join(t.TempDir(), "fuse.log")
		// The mountpoint is missing, so this stops after the flags are taken.
		out, code := runBin(t, "", "fuse", "--thread-num", "4", "--apisock", "/tmp/x.sock", "--log-file", logFile,
			"-B", boot, "-D", dir, "-M", "/nonexistent/mnt")
		logged, _ := os.ReadFile(logFile)
		if code != exitFailure || !strings.Contains(out, "no such directory") || !strings.Contains(string(logged), "--thread-num 4: ignored") {
			t.Fatalf("exit %d: %s\nlog file: %s", code, out, logged)
		}
	})
	t.Run("check and unpack take --log-level", func(t *testing.T) {
		boot, dir, _ := v6Image(t)
		for _, args := range [][]string{{"check", "--log-level", "debug", "--bootstrap", boot},
			{"unpack", "--log-level=warn", "--bootstrap", boot, "--blob-dir", dir, "--output", filepath.Join(t.TempDir(), "o.tar")}} {
			if out, code := runBin(t, "", args...); code != 0 {
				t.Errorf("%q: exit %d\n%s", args, code, out)
			}
		}
		if out, code := runBin(t, "", "check", "--log-level", "loud", "--bootstrap", boot); code != exitUsage || !strings.Contains(out, "--log-level") {
			t.Errorf("bad level: exit %d\n%s", code, out)
		}
	})
	t.Run("daemon keeps virtiofsd's forms", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "s")
		d := startDaemon(t, buildBinary(t), nil, "--socket-path", sock, "-o", "source="+shareDir(t)+",cache=always", "--sandbox=none",
			"--thread-pool-size=2", "--not-an-option", "x")
		if !strings.Contains(d.log(), "unknown option --not-an-option ignored") {
			t.Fatal(d.log())
		}
	})
}

func subcommandLine(name string) string {
	for _, c := range commands() {
		if c.name == name {
			return fmt.Sprintf("  %-9s %s", c.name, c.short)
		}
	}
	return name
}

// Item 7: nydusd's --supervisor says it does nothing; --log-file is
// honoured.
func TestNydusdOptions(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	d := startDaemon(t, bin, nil, "virtiofs", "--sock", filepath.Join(dir, "v.sock"), "--id", "d1", "--supervisor", filepath.Join(dir, "sv.sock"), "--shared-dir", shareDir(t))
	if !strings.Contains(d.log(), "live upgrade and failover are not supported") {
		t.Errorf("--supervisor is silent:\n%s", d.log())
	}
	logFile := filepath.Join(dir, "nydusd.log")
	d = startDaemon(t, bin, nil, "virtiofs", "--sock", filepath.Join(dir, "w.sock"), "-L", logFile, "--shared-dir", shareDir(t))
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(t, 5*time.Second)
	logged, err := os.ReadFile(logFile)
	if err != nil || !strings.Contains(string(logged), "Waiting for vhost-user socket connection") || !strings.Contains(string(logged), "SIGTERM received") {
		t.Errorf("log file: %v\n%s", err, logged)
	}
	if strings.TrimSpace(d.log()) != waitingLine {
		t.Errorf("stderr has more than the line Kata waits for:\n%s", d.log())
	}
}

// Item 8: fuse mountpoints.
func TestFuseMountpoints(t *testing.T) {
	boot, dir, _ := v6Image(t)
	t.Run("missing", func(t *testing.T) {
		mnt := filepath.Join(t.TempDir(), "mnt")
		out, code := runBin(t, "", "fuse", "--bootstrap", boot, "--blob-dir", dir, "--mountpoint", mnt)
		if code != exitFailure || out != fmt.Sprintf("%s fuse: --mountpoint %s: no such directory (create it first)\n", prog, mnt) {
			t.Fatalf("exit %d: %q", code, out)
		}
	})
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root for direct FUSE mounts")
	}
	bin := buildBinary(t)
	mnt := t.TempDir()
	start := func(extra ...string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"fuse", "--bootstrap", boot, "--blob-dir", dir, "--mountpoint", mnt}, extra...)...)
		var stderr syncWriter
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 400; i++ {
			if strings.Contains(stderr.String(), "serving RAFS") {
				return cmd
			}
			time.Sleep(25 * time.Millisecond)
		}
		cmd.Process.Kill()
		t.Fatalf("not mounted after 10 s: %s", stderr.String())
		return nil
	}
	first := start()
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	out, code := runBin(t, "", "fuse", "--bootstrap", boot, "--blob-dir", dir, "--mountpoint", mnt)
	if code != exitFailure || !strings.Contains(out, "an image is already mounted here") {
		t.Fatalf("on a live mount: exit %d: %s", code, out)
	}
	first.Process.Kill() // SIGKILL: the mount is left stale
	first.Wait()
	out, code = runBin(t, "", "fuse", "--bootstrap", boot, "--blob-dir", dir, "--mountpoint", mnt)
	if code != exitFailure || !strings.Contains(out, "holds a stale FUSE mount") || !strings.Contains(out, "umount -l "+mnt) ||
		!strings.Contains(out, "--unmount-stale") {
		t.Fatalf("on a stale mount: exit %d: %s", code, out)
	}
	second := start("--unmount-stale")
	second.Process.Signal(syscall.SIGTERM)
	if err := second.Wait(); err != nil {
		t.Fatalf("fuse --unmount-stale exited with %v", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "lib.rs")); err == nil {
		t.Error("still mounted after SIGTERM")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Errorf("mountpoint not usable after SIGTERM: %v", err)
	}
}

// Item 9: one cause, said once, with the path.
func TestErrorsSayTheCause(t *testing.T) {
	share := shareDir(t)
	missingDir := filepath.Join(t.TempDir(), "missing")
	sock := filepath.Join(missingDir, "vfs.sock")
	out, code := runBin(t, "", "--socket-path="+sock, "--shared-dir="+share, "--sandbox=none")
	if code != exitFailure || !strings.Contains(out, fmt.Sprintf(`"--socket-path %s: directory %s does not exist"`, sock, missingDir)) ||
		strings.Contains(out, "bind") {
		t.Errorf("socket in a missing directory: exit %d: %s", code, out)
	}
	for _, mode := range []string{"namespace", "none"} {
		out, code = runBin(t, "", "--socket-path="+filepath.Join(t.TempDir(), "s"), "--shared-dir="+missingDir, "--sandbox="+mode)
		if code != exitFailure || !strings.Contains(out, fmt.Sprintf(`"--shared-dir %s: no such directory"`, missingDir)) || strings.Contains(out, "sandbox") {
			t.Errorf("missing --shared-dir (sandbox %s): exit %d: %s", mode, code, out)
		}
	}
}

// Item 10: what the logs say.
func TestLogLines(t *testing.T) {
	bin := buildBinary(t)
	t.Run("syslog warns once", func(t *testing.T) {
		args := []string{"--socket-path=" + filepath.Join(t.TempDir(), "s"), "--shared-dir=" + shareDir(t), "--syslog"}
		if os.Geteuid() != 0 {
			args = append(args, "--sandbox=none")
		}
		d := startDaemon(t, bin, nil, args...)
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.wait(t, 5*time.Second)
		if n := strings.Count(d.log(), "syslog unavailable"); n > 1 {
			t.Errorf("warned %d times:\n%s", n, d.log())
		}
	})
	t.Run("host pid in the namespace sandbox", func(t *testing.T) {
		if os.Geteuid() != 0 {
			testenv.Skip(t, "needs root (namespaces)")
		}
		d := startDaemon(t, bin, nil, "--socket-path="+filepath.Join(t.TempDir(), "s"), "--shared-dir="+shareDir(t))
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.wait(t, 5*time.Second)
		if strings.Contains(d.log(), "pid=1\n") || !strings.Contains(d.log(), "root is") {
			t.Errorf("a line says pid=1:\n%s", d.log())
		}
	})
	t.Run("blob id once in a read failure", func(t *testing.T) {
		boot, dir, id := v6Image(t)
		blobs := t.TempDir()
		data, err := os.ReadFile(filepath.Join(dir, id))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(blobs, id), data, 0o644)
		sock := filepath.Join(t.TempDir(), "s")
		d := startDaemon(t, bin, nil, "--socket-path="+sock, "--bootstrap="+boot, "--blob-dir="+blobs)
		if err := os.Truncate(filepath.Join(blobs, id), 0); err != nil { // after the mount checked it
			t.Fatal(err)
		}
		drv, c := connectFUSE(t, d, sock, testdriver.QEMU)
		defer drv.Close()
		e := lookupPath(t, c, "lib.rs")
		o, err := c.Open(e.NodeId, uint32(os.O_RDONLY))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(e.NodeId, o.Fh, 0, 4096); err == nil {
			t.Fatal("read of a truncated blob succeeded")
		}
		for i := 0; i < 100 && !strings.Contains(d.log(), "level=warning"); i++ {
			time.Sleep(20 * time.Millisecond) // stderr is read asynchronously
		}
		found := false
		for _, line := range strings.Split(d.log(), "\n") {
			if strings.Contains(line, "level=warning") && strings.Contains(line, id) {
				found = true
				if n := strings.Count(line, id); n != 1 {
					t.Errorf("blob id %d times in %s", n, line)
				}
			}
		}
		if !found {
			t.Errorf("no read failure logged:\n%s", d.log())
		}
	})
	t.Run("digest failure said once", func(t *testing.T) {
		boot, dir, id := v6Image(t)
		blobs := t.TempDir()
		data, _ := os.ReadFile(filepath.Join(dir, id))
		data[100] ^= 0xff // inside lib.rs's first chunk
		os.WriteFile(filepath.Join(blobs, id), data, 0o644)
		out, code := runBin(t, "", "unpack", "--bootstrap", boot, "--blob-dir", blobs, "--digest-validate", "--output", filepath.Join(t.TempDir(), "o.tar"))
		if code != exitFailure || strings.Count(out, "digest") == 0 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("exit %d, want one line:\n%s", code, out)
		}
	})
	t.Run("fuse --debug keeps our format", func(t *testing.T) {
		if os.Geteuid() != 0 {
			testenv.Skip(t, "needs root for a direct FUSE mount")
		}
		boot, dir, _ := v6Image(t)
		mnt := t.TempDir()
		cmd := exec.Command(bin, "fuse", "--debug", "--log-level", "debug", "--bootstrap", boot, "--blob-dir", dir, "--mountpoint", mnt)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		for i := 0; i < 400; i++ {
			if _, err := os.ReadFile(filepath.Join(mnt, "lib.rs")); err == nil {
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if len(lines) < 5 {
			t.Fatalf("few lines with --debug:\n%s", stderr.String())
		}
		for _, l := range lines {
			if !strings.HasPrefix(l, `time="`) {
				t.Errorf("not our log format: %q", l)
			}
		}
	})
}

// Item 11: unpack says whether it verified; check --verbose has a header.
func TestToolReports(t *testing.T) {
	boot, dir, _ := v6Image(t)
	out, code := runBin(t, "", "unpack", "--bootstrap", boot, "--blob-dir", dir, "--output", filepath.Join(t.TempDir(), "o.tar"))
	if code != 0 || !strings.Contains(out, "data not verified against the chunk digests (pass --digest-validate to verify)") {
		t.Errorf("unpack: exit %d: %s", code, out)
	}
	out, code = runBin(t, "", "unpack", "--digest-validate", "--bootstrap", boot, "--blob-dir", dir, "--output", filepath.Join(t.TempDir(), "o.tar"))
	if code != 0 || !strings.Contains(out, "every chunk was verified against its digest") {
		t.Errorf("unpack --digest-validate: exit %d: %s", code, out)
	}
	out, code = runBin(t, "", "check", "--verbose", "--bootstrap", boot, "--blob-dir", dir)
	if first, _, _ := strings.Cut(out, "\n"); code != 0 || strings.Join(strings.Fields(first), " ") != "INODE MODE LINK SIZE PATH" {
		t.Errorf("check --verbose: exit %d: %s", code, out)
	}
}

// syncWriter collects a child's output for polling.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
