package fuseclient_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
)

func TestBuild(t *testing.T) {
	c := fuseclient.New(nil)
	a := c.Build(1, 7, []byte{1, 2}, []byte("x\x00"))
	b := c.Build(1, 7, nil)
	if len(a) != 44 || binary.LittleEndian.Uint32(a) != 44 || binary.LittleEndian.Uint32(a[4:]) != 1 ||
		binary.LittleEndian.Uint64(a[16:]) != 7 || string(a[40:]) != "\x01\x02x\x00" {
		t.Fatalf("request %x", a)
	}
	if binary.LittleEndian.Uint64(b[8:]) == binary.LittleEndian.Uint64(a[8:]) {
		t.Fatal("unique not incremented")
	}
}

func TestParseReplyRejects(t *testing.T) {
	for _, b := range [][]byte{nil, make([]byte, 15), {17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, err := fuseclient.ParseReply(b); err == nil {
			t.Errorf("ParseReply(%x) accepted", b)
		}
	}
}

func TestParseDirEntriesRejects(t *testing.T) {
	ent := make([]byte, 32)
	binary.LittleEndian.PutUint32(ent[16:], 9) // name of 9 bytes in an 8-byte record
	for _, b := range [][]byte{make([]byte, 10), ent} {
		if _, err := fuseclient.ParseDirEntries(b, false); err == nil {
			t.Errorf("ParseDirEntries(%x) accepted", b)
		}
	}
	if _, err := fuseclient.ParseDirEntries(make([]byte, 100), true); err == nil {
		t.Error("truncated READDIRPLUS entry accepted")
	}
}

// TestAgainstDevice runs the client over fusewire and go-fuse's loopback.
func TestAgainstDevice(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("hello world"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := fs.NewLoopbackRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := logrus.New()
	l.SetLevel(logrus.ErrorLevel)
	dev := fusewire.NewDevice(fs.NewNodeFS(root, &fs.Options{}), fusewire.Options{Logger: l})
	c := fuseclient.New(testdriver.Direct(dev, 1))
	c.Hiprio = testdriver.Direct(dev, 0)
	if _, err := c.Init(38, 1<<0|1<<13, 1<<17); err != nil {
		t.Fatal(err)
	}
	e, err := c.Lookup(1, "hello")
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.Open(e.NodeId, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Read(e.NodeId, o.Fh, 6, 100); err != nil || string(got) != "world" {
		t.Fatalf("READ %q, %v", got, err)
	}
	if err := c.Release(e.NodeId, o.Fh); err != nil {
		t.Fatal(err)
	}
	d, err := c.OpenDir(1)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := c.ReadDirPlus(1, d.Fh, 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, en := range ents {
		found = found || (en.Name == "hello" && en.Entry != nil && en.Entry.Attr.Size == 11)
	}
	if !found {
		t.Fatalf("READDIRPLUS %+v lacks hello", ents)
	}
	if err := c.ReleaseDir(1, d.Fh); err != nil {
		t.Fatal(err)
	}
	if err := c.Forget(e.NodeId, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.BatchForget([][2]uint64{{e.NodeId, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Destroy(); err != nil {
		t.Fatal(err)
	}
}

func TestPageLayout(t *testing.T) {
	c := fuseclient.New(func(readable [][]byte, sizes []int) ([]byte, error) {
		if len(readable) != 4 || len(readable[0]) != 80 || len(readable[1]) != 4096 || len(readable[3]) != 100 {
			t.Errorf("readable lengths %d", len(readable))
		}
		return nil, nil
	})
	c.PageLayout(4096)
	if _, err := c.Write(2, 1, 0, make([]byte, 8192+100)); err == nil {
		t.Fatal("empty reply accepted")
	}
	if got := c.SplitWritable(16, 16+8192+1); len(got) != 4 || got[0] != 16 || got[1] != 4096 || got[3] != 1 {
		t.Fatalf("writable sizes %v", got)
	}
}
