package guesttests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// LocalRegistry is Debian's docker-registry (distribution 2.8) started on
// a free loopback port without authentication, storing under a directory:
// for the demo and the benchmark, which are not tests (the tests use
// internal/testsvc).
type LocalRegistry struct {
	Host string // 127.0.0.1:port
	cmd  *exec.Cmd
}

// StartLocalRegistry starts docker-registry with its data under dir and
// waits until it answers.
func StartLocalRegistry(ctx context.Context, dir string) (*LocalRegistry, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("docker-registry is not installed (scripts/install-deps.sh): %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	host := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nhttp:\n  addr: %s\n  secret: demo-secret\n"+
		"storage:\n  filesystem:\n    rootdirectory: %s/data\n  redirect:\n    disable: true\n", host, dir)
	p := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", p)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &LocalRegistry{Host: host, cmd: cmd}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			return r, nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.Stop()
	return nil, errors.New("docker-registry did not answer within 15 s (see registry.log)")
}

// Stop kills the registry and waits for it.
func (r *LocalRegistry) Stop() {
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	_ = r.cmd.Wait()
}
