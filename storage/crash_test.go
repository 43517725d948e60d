package storage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// childEnv selects what the test binary does when a test re-executes it.
const childEnv = "NVFS_STORAGE_CHILD"

// slowLocal is a localfs backend whose reads take a while, so that a
// fill is still running when the child is killed.
type slowLocal struct {
	backend.Backend
	delay time.Duration
}

func (s slowLocal) Open(ctx context.Context, id string) (backend.Blob, error) {
	b, err := s.Backend.Open(ctx, id)
	if err != nil {
		return nil, err
	}
	return slowBlob{b, s.delay}, nil
}

type slowBlob struct {
	backend.Blob
	delay time.Duration
}

func (s slowBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	time.Sleep(s.delay)
	return s.Blob.ReadAt(ctx, p, off)
}

const crashChunks = 256

func crashBlob() *testBlob { return newTestBlob("c0ffee", crashChunks, 4096, 42) }

// fillChild fills the cache in dir from the blob file in src, chunk by
// chunk, and then keeps going until it is killed.
func fillChild(src, dir string) error {
	tb := crashBlob()
	m, err := NewManager(Options{Type: TypeBlobcache, WorkDir: dir, SyncInterval: 5 * time.Millisecond, NoAmplify: true, Log: quietLog()})
	if err != nil {
		return err
	}
	b, err := m.Open(tb.desc(), slowLocal{backend.NewLocalFS(src), time.Millisecond}, identity{}, tb)
	if err != nil {
		return err
	}
	for i := range tb.chunks {
		if err := b.Get(context.Background(), tb.chunks[i:i+1], make([]Location, 1)); err != nil {
			return err
		}
	}
	select {} // wait to be killed
}

// ChildHooks are child-process modes registered by the external tests
// (storage_test), run when childEnv names them.
var ChildHooks = map[string]func() error{}

func TestMain(m *testing.M) {
	if h := ChildHooks[os.Getenv(childEnv)]; h != nil {
		fmt.Fprintln(os.Stderr, h())
		os.Exit(3)
	}
	switch os.Getenv(childEnv) {
	case "fill":
		err := fillChild(os.Getenv("SRC"), os.Getenv("DIR"))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	case "diskfull":
		if err := diskFullChild(os.Getenv("DIR")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// KillChildAfter runs this test binary in child mode mode with env added,
// kills it with SIGKILL after d and checks that it died of that.
func KillChildAfter(t testing.TB, mode string, d time.Duration, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child was not killed: %v %s", err, stderr.String())
	}
}

// TestKill9DuringFill kills a process filling the cache with SIGKILL at
// different moments, then reads every chunk from the cache it left,
// without digest checks: every byte must be right.
func TestKill9DuringFill(t *testing.T) {
	tb := crashBlob()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, tb.id), tb.data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, after := range []time.Duration{20 * time.Millisecond, 80 * time.Millisecond, 200 * time.Millisecond} {
		t.Run(after.String(), func(t *testing.T) {
			dir := t.TempDir()
			KillChildAfter(t, "fill", after, "SRC="+src, "DIR="+dir)
			be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
			m := newManager(t, Options{Type: TypeBlobcache, WorkDir: dir, NoAmplify: true})
			b := openTest(t, m, tb, be, tb)
			survived := 0
			for i := range tb.chunks {
				if b.Ready(uint32(i)) {
					survived++
				}
			}
			if got := readAll(t, b, tb.chunks); !bytes.Equal(got, tb.data) {
				t.Fatal("a chunk read after kill -9 is wrong")
			}
			t.Logf("killed after %v: %d of %d chunks survived, %d refetched in %d reads", after, survived, crashChunks, crashChunks-survived, be.reads.Load())
		})
	}
}

// diskFullChild reads a blob through a cache whose files may not grow past
// 64 KiB (RLIMIT_FSIZE: writes fail with EFBIG, as on a full disk): every
// read must still return the right bytes.
func diskFullChild(dir string) error {
	signal.Ignore(syscall.SIGXFSZ)
	tb := newTestBlob("fu11", 64, 4096, 43)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
	m, err := NewManager(Options{Type: TypeBlobcache, WorkDir: dir, NoAmplify: true, Log: quietLog()})
	if err != nil {
		return err
	}
	defer m.Close()
	b, err := m.Open(tb.desc(), be, identity{}, tb)
	if err != nil {
		return err
	}
	// The sparse file exists at its full size; writes past 64 KiB fail.
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 64 << 10, Max: 64 << 10}); err != nil {
		return err
	}
	for round := range 2 {
		for i := range tb.chunks {
			locs := make([]Location, 1)
			if err := b.Get(context.Background(), tb.chunks[i:i+1], locs); err != nil {
				return fmt.Errorf("round %d chunk %d: %w", round, i, err)
			}
			buf := make([]byte, 4096)
			if locs[0].Fd >= 0 {
				if err := preadFull(locs[0].Fd, buf, locs[0].Off); err != nil {
					return err
				}
			} else {
				copy(buf, locs[0].Data)
			}
			if !bytes.Equal(buf, tb.data[i*4096:(i+1)*4096]) {
				return fmt.Errorf("round %d chunk %d: wrong bytes", round, i)
			}
		}
	}
	if m.Metrics().WriteErrors == 0 {
		return fmt.Errorf("no write failed: the limit did not apply")
	}
	return nil
}

func TestDiskFullServesFromBackend(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=diskfull", "DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
}
