package guesttests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

// EnvUmountBoots sets how many boots TestGuestLongWorkloadUnmounts makes per
// backend (default 1; the acceptance run of issue 13 uses 10).
const EnvUmountBoots = "NVFS_UMOUNT_BOOTS"

// TestGuestLongWorkloadUnmounts is the guest side of the unmount hang of
// issue 13 (docs/notifications.md): a workload long enough that the
// request queue's 16-bit indexes wrap several times and cache drops send
// tens of thousands of FORGETs on hiprio, then an unmount, which waits for
// every request and FORGET the guest counts in flight. Per round (three per
// boot): a cold sequential read of 256 MiB, a cold find over 10,101 entries
// and a cold lstat of the 10,000 files by path (both after a cache drop),
// then every file's content checked against the host's checksums. The boot
// must end with a clean unmount within the guest's umount watchdog and the
// backend exiting by itself, within a bounded run time.
func TestGuestLongWorkloadUnmounts(t *testing.T) {
	env := setupGuests(t)
	boots := 1
	if s := os.Getenv(EnvUmountBoots); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive count", EnvUmountBoots, s)
		}
		boots = n
	}
	share := t.TempDir()
	if err := writeSeeded(filepath.Join(share, "big.bin"), 13, 256<<20); err != nil {
		t.Fatal(err)
	}
	if err := MakeManyFiles(filepath.Join(share, "many"), 10000); err != nil {
		t.Fatal(err)
	}
	sums, _, err := check.Build(filepath.Join(share, "many"), check.ManifestOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(sums.Entries) != 10101 {
		t.Fatalf("many: %d entries, want 10101", len(sums.Entries))
	}
	var steps []check.Step
	for r := 1; r <= 3; r++ {
		steps = append(steps,
			check.Step{Name: fmt.Sprintf("dd-256m-%d", r), Kind: check.KindSeqRead, File: "big.bin", Reps: 1},
			check.Step{Name: fmt.Sprintf("find-stat-%d", r), Kind: check.KindStatWalk, Dir: "many", Reps: 1},
			check.Step{Name: fmt.Sprintf("md5-10k-%d", r), Kind: check.KindManifest, Dir: "many", Manifest: sums,
				Build: check.ManifestOptions{Hash: true}},
		)
	}
	env.forEachBackend(t, func(t *testing.T, b Backend) {
		for i := 1; i <= boots; i++ {
			t.Run(fmt.Sprint("boot", i), func(t *testing.T) {
				res, err := Run(context.Background(), RunOptions{
					Guest: env.guest, Backend: b,
					Serve:   BackendConfig{SharedDir: share, Cache: "auto"},
					Config:  check.Config{Steps: steps, UmountTimeoutSec: 60, StepTimeoutSec: 300},
					LogDir:  logDir(t),
					Timeout: 20 * time.Minute,
				})
				if err != nil {
					t.Fatal(err)
				}
				logRun(t, res)
				if err := Verify(res, steps); err != nil {
					t.Errorf("%v\n%s", err, res.Tails(30))
				}
			})
		}
	})
}
