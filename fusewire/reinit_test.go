package fusewire_test

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
)

func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A guest that reboots without unmounting sends INIT again with no
// DESTROY before it: the previous boot's inodes and open files must not
// stay behind (they did: +50 fds per crashed boot with passthrough).
func TestReInitWithoutDestroyForgetsPreviousSession(t *testing.T) {
	dir := t.TempDir()
	const files = 50
	for i := 0; i < files; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint("f", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l := logrus.New()
	l.SetLevel(logrus.ErrorLevel)
	pfs, err := passthrough.New(dir, passthrough.Options{Logger: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	defer pfs.Close()
	dev := fusewire.NewDevice(pfs, fusewire.Options{Logger: logrus.NewEntry(l)})
	c := fuseclient.New(testdriver.Direct(dev, 1))
	c.Hiprio = testdriver.Direct(dev, 0)
	boot := func() {
		t.Helper()
		if _, err := c.Init(38, 0xb7bfffffb, 128<<10); err != nil {
			t.Fatalf("INIT: %v", err)
		}
		for i := 0; i < files; i++ {
			e, err := c.Lookup(1, fmt.Sprint("f", i))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Open(e.NodeId, uint32(syscall.O_RDONLY)); err != nil {
				t.Fatal(err)
			}
		}
		// ...and the guest crashes: no RELEASE, no FORGET, no DESTROY.
	}
	boot()
	base := openFds(t)
	for i := 0; i < 5; i++ {
		boot()
	}
	if got := openFds(t); got > base+files/2 {
		t.Fatalf("open fds went from %d to %d over 5 boots without DESTROY", base, got)
	}
	// The fresh session works.
	if _, err := c.Lookup(1, "f0"); err != nil {
		t.Fatal(err)
	}
}
