package check

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Markers the guest prints on the serial console, each at the start of a line.
const (
	// MarkHarness prefixes progress lines: "@@HARNESS EVENT key=value ...".
	MarkHarness = "@@HARNESS "
	// MarkResult prefixes one JSON-encoded Result per step.
	MarkResult = "@@RESULT "
	// MarkEnd is the last line before power-off: "@@END rc=N".
	MarkEnd = "@@END rc="
)

// ConfigPath is where the host's per-run cpio puts the guest configuration.
const ConfigPath = "/harness/config.json"

// Step kinds.
const (
	KindManifest = "manifest" // build a manifest of Dir and compare it with Manifest
	KindMutate   = "mutate"   // apply Mutate to Dir, then compare Dir with Manifest (if set)
	KindXattr    = "xattr"    // run XattrOps on Dir
	KindReadOnly = "readonly" // every write into Dir (and to File, if set) must fail with EROFS
	KindReread   = "reread"   // cold read of File, then Reps-1 re-reads; pages kept across close (Cache)
	KindSeqRead  = "seqread"  // benchmark: cold sequential read of File, Reps times
	KindStatWalk = "statwalk" // benchmark: cold readdir+lstat walk and lstat-by-path of Dir
	KindMetaRead = "metaread" // benchmark: cold and warm walks, lstat by path, md5 of every file of Dir
	KindPaired   = "paired"   // benchmark: seqread of File and metaread of Dir on each of Mounts, pair by pair
	KindDemo     = "demo"     // print a listing of Dir and the content of File
	KindExec     = "exec"     // run Argv (cwd = Dir) with output on the console; fails on a non-zero exit
	KindShell    = "shell"    // interactive /bin/sh on the console (cwd = Dir; needs BuildOptions.Busybox)
)

// Config is what the guest's /init reads from ConfigPath.
type Config struct {
	Tag   string `json:"tag"`            // virtio-fs tag to mount
	Mount string `json:"mount"`          // mount point (default /mnt)
	Opts  string `json:"opts,omitempty"` // mount options; "ro" becomes MS_RDONLY
	Steps []Step `json:"steps"`
	// Extra are more virtio-fs devices to mount beside Tag (with the same
	// Opts), for steps that name their Mount: a paired benchmark serves
	// one share through two daemons to one guest.
	Extra []ExtraMount `json:"extra,omitempty"`
	// UmountTimeoutSec bounds the final umount (default 15 s).
	UmountTimeoutSec int `json:"umount_timeout_sec,omitempty"`
	// StepTimeoutSec: a step still running after this long gets the
	// guest's blocked tasks dumped on the console (sysrq-w), once; the run
	// goes on (the host's timeout ends it). Default 60 s.
	StepTimeoutSec int `json:"step_timeout_sec,omitempty"`
}

// ExtraMount is one more virtio-fs tag and where the guest mounts it.
type ExtraMount struct {
	Tag   string `json:"tag"`
	Mount string `json:"mount"`
}

// Step is one check or measurement inside the guest.
type Step struct {
	Name     string          `json:"name"`
	Kind     string          `json:"kind"`
	Dir      string          `json:"dir,omitempty"`  // relative to the mount point
	File     string          `json:"file,omitempty"` // relative to the mount point
	Manifest *Manifest       `json:"manifest,omitempty"`
	Compare  CompareOptions  `json:"compare,omitempty"`
	Build    ManifestOptions `json:"build,omitempty"`
	Reps     int             `json:"reps,omitempty"`
	Argv     []string        `json:"argv,omitempty"`
	Cache    string          `json:"cache,omitempty"` // KindReread: CacheKept, CacheDropped or "" (no check)
	Soak     *SoakParams     `json:"soak,omitempty"`  // KindSoak
	Lower    string          `json:"lower,omitempty"` // KindOverlay: the lower layer, relative to the mount point
	// Mount is the mount point the step works under: Config.Mount when
	// empty, or one of Config.Extra's.
	Mount string `json:"mount_point,omitempty"`
	// Mounts are the mount points a KindPaired step compares (File and
	// Dir are relative to each).
	Mounts []string `json:"mounts,omitempty"`
}

// Result is what the guest reports for one step.
type Result struct {
	Step    string             `json:"step"`
	Kind    string             `json:"kind"`
	OK      bool               `json:"ok"`
	Errors  []string           `json:"errors,omitempty"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// MaxErrors bounds the errors a step reports (the serial console is slow).
const MaxErrors = 40

// Errs collects at most MaxErrors messages and counts the rest.
type Errs struct {
	List    []string
	dropped int
}

// Addf records one error.
func (e *Errs) Addf(format string, args ...any) {
	if len(e.List) >= MaxErrors {
		e.dropped++
		return
	}
	e.List = append(e.List, fmt.Sprintf(format, args...))
}

// Strings returns the messages, with a final count of the dropped ones.
func (e *Errs) Strings() []string {
	if e.dropped == 0 {
		return e.List
	}
	return append(append([]string(nil), e.List...), fmt.Sprintf("... and %d more", e.dropped))
}

// Empty reports whether no error was recorded.
func (e *Errs) Empty() bool { return len(e.List) == 0 }

// ParseLine recognises one serial console line. It returns the Result of a
// MarkResult line, or the rc of a MarkEnd line (end=true).
func ParseLine(line string) (res *Result, rc int, end bool, err error) {
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, MarkResult):
		var r Result
		if err := json.Unmarshal([]byte(line[len(MarkResult):]), &r); err != nil {
			return nil, 0, false, fmt.Errorf("bad result line %q: %w", line, err)
		}
		return &r, 0, false, nil
	case strings.HasPrefix(line, MarkEnd):
		if _, err := fmt.Sscanf(line[len(MarkEnd):], "%d", &rc); err != nil {
			return nil, 0, false, fmt.Errorf("bad end line %q: %w", line, err)
		}
		return nil, rc, true, nil
	}
	return nil, 0, false, nil
}
