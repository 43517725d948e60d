package guesttests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

// Verify turns a finished run into one error listing everything wrong: a
// step missing or failed, a non-zero guest rc, an unclean umount, a backend
// that did not exit 0 by itself after QEMU quit.
func Verify(res *RunResult, steps []check.Step) error {
	var errs []string
	for _, s := range steps {
		r := res.Result(s.Name)
		switch {
		case r == nil:
			errs = append(errs, fmt.Sprintf("step %s: no result", s.Name))
		case !r.OK:
			errs = append(errs, fmt.Sprintf("step %s failed:\n    %s", s.Name, strings.Join(r.Errors, "\n    ")))
		}
	}
	if res.GuestRC != 0 {
		errs = append(errs, fmt.Sprintf("guest rc=%d", res.GuestRC))
	}
	if _, ok := res.Events["UMOUNTED"]; !ok {
		errs = append(errs, "the guest did not unmount cleanly")
	}
	if !res.BackendExitedAlone || res.BackendExit != 0 {
		errs = append(errs, fmt.Sprintf("backend did not exit 0 by itself after QEMU quit (exit code %d, exited alone %v)",
			res.BackendExit, res.BackendExitedAlone))
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "\n"))
}

// ReadOnlyCheck is the image check: the guest mounts what backend serves
// with "ro", compares every entry (and, when want has checksums, every
// byte) with want, and checks that writes fail with EROFS (check.ReadOnlyOps
// on want's ReadOnlyTargets). serve says how to start the backend (for an
// image: Vars such as bootstrap/blob dir for a Template backend, no
// SharedDir).
type ReadOnlyCheck struct {
	Guest   *Guest
	Backend Backend
	Serve   BackendConfig
	Want    *check.Manifest
	Compare check.CompareOptions
	LogDir  string
	Timeout time.Duration
}

// readOnlyStep is the EROFS step on the targets want offers (an empty
// directory and a regular file when it has them).
func readOnlyStep(want *check.Manifest) check.Step {
	dir, file := want.ReadOnlyTargets()
	return check.Step{Name: "readonly", Kind: check.KindReadOnly, Dir: dir, File: file}
}

// Run boots the guest and returns the run and Verify's verdict.
func (c ReadOnlyCheck) Run(ctx context.Context) (*RunResult, error) {
	hash := false
	for _, e := range c.Want.Entries {
		if e.Sum != "" {
			hash = true
			break
		}
	}
	steps := []check.Step{
		{Name: "manifest", Kind: check.KindManifest, Manifest: c.Want, Compare: c.Compare,
			Build: check.ManifestOptions{Hash: hash, Xattrs: c.Compare.Xattrs}},
		readOnlyStep(c.Want),
	}
	res, err := Run(ctx, RunOptions{
		Guest: c.Guest, Backend: c.Backend, Serve: c.Serve,
		Config:  check.Config{Opts: "ro", Steps: steps},
		LogDir:  c.LogDir,
		Timeout: c.Timeout,
	})
	if err != nil {
		return res, err
	}
	if err := Verify(res, steps); err != nil {
		return res, fmt.Errorf("%s: %w\n%s", c.Backend.Name, err, res.Tails(15))
	}
	return res, nil
}
