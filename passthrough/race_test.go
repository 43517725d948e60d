package passthrough

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// TestCreateRenameExchangeRace: while an unprivileged guest user makes
// directories and nodes, another guest process swaps each new name with a
// root-owned 0644 file (RENAME_EXCHANGE). Whatever the daemon does after
// creating must never change the root-owned file: with a daemon umask of
// 022, fixing up the mode by name after the fact made it 0666.
func TestCreateRenameExchangeRace(t *testing.T) {
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	e := newEnv(t, Options{})
	if err := unix.Chmod(e.share, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.host("victim"), []byte("root's"), 0o644); err != nil {
		t.Fatal(err)
	}
	vfd, err := unix.Open(e.host("victim"), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(vfd)
	sfd, err := unix.Open(e.share, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sfd)
	user := fuse.Caller{Owner: fuse.Owner{Uid: testUID, Gid: testGID}}

	makers := map[string]func(name string, out *fuse.EntryOut) fuse.Status{
		"mkdir": func(name string, out *fuse.EntryOut) fuse.Status {
			return e.fs.Mkdir(nil, &fuse.MkdirIn{InHeader: fuse.InHeader{NodeId: 1, Caller: user}, Mode: 0o777}, name, out)
		},
		"mknod": func(name string, out *fuse.EntryOut) fuse.Status {
			return e.fs.Mknod(nil, &fuse.MknodIn{InHeader: fuse.InHeader{NodeId: 1, Caller: user}, Mode: syscall.S_IFREG | 0o666}, name, out)
		},
	}
	for kind, mk := range makers {
		t.Run(kind, func(t *testing.T) {
			var (
				mu      sync.Mutex // held by the exchanger per swap; taken to check
				current atomic.Value
				stop    atomic.Bool
				wg      sync.WaitGroup
			)
			current.Store("")
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					mu.Lock()
					if n := current.Load().(string); n != "" {
						unix.Renameat2(sfd, n, sfd, "victim", unix.RENAME_EXCHANGE)
					}
					mu.Unlock()
				}
			}()
			defer func() { stop.Store(true); wg.Wait() }()
			swapped := 0
			for i := 0; i < 300; i++ {
				name := kind + "-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
				current.Store(name)
				var out fuse.EntryOut
				s := mk(name, &out)
				mu.Lock()
				current.Store("")
				var st unix.Stat_t
				if err := unix.Fstat(vfd, &st); err != nil {
					mu.Unlock()
					t.Fatal(err)
				}
				if st.Mode&07777 != 0o644 || st.Uid != 0 {
					mu.Unlock()
					t.Fatalf("try %d: the root-owned file is now mode %o uid %d (want 644, 0)", i, st.Mode&07777, st.Uid)
				}
				// Put the root file back under its name, drop the new one.
				var vst unix.Stat_t
				if unix.Fstatat(sfd, "victim", &vst, unix.AT_SYMLINK_NOFOLLOW) == nil && vst.Ino != st.Ino {
					unix.Renameat2(sfd, name, sfd, "victim", unix.RENAME_EXCHANGE)
					swapped++
				}
				unix.Unlinkat(sfd, name, unix.AT_REMOVEDIR)
				unix.Unlinkat(sfd, name, 0)
				mu.Unlock()
				if s.Ok() {
					e.fs.Forget(out.NodeId, 1)
				}
			}
			t.Logf("%d of 300 creations raced an exchange", swapped)
		})
	}
}
