package guesttests

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// ExtraOption is nydus-snapshotter's extraoption (enable_nydus_overlayfs).
type ExtraOption struct {
	Source      string `json:"source"`
	Config      string `json:"config"`
	Snapshotdir string `json:"snapshotdir"`
	Version     string `json:"fs_version"`
}

// SnapshotterConfig is the nydusd config nydus-snapshotter writes for a
// registry image (its FuseDaemonConfig, nydusd v1 shape).
// host may be a proxy in front of the registry; auth is base64
// "user:password". prefetch turns fs_prefetch (prefetch_all) on.
func SnapshotterConfig(host, repo, auth, snapshotID, workDir string, prefetch bool) string {
	return SnapshotterConfigWith(host, repo, auth, snapshotID, workDir, ConfigOptions{Prefetch: prefetch, PrefetchAll: true})
}

// ConfigOptions are the switches of SnapshotterConfigWith.
type ConfigOptions struct {
	Prefetch      bool // fs_prefetch.enable
	PrefetchAll   bool // fs_prefetch.prefetch_all
	AccessPattern bool // access_pattern: record it for /api/v1/metrics/pattern
}

// SnapshotterConfigWith is SnapshotterConfig with each switch given.
func SnapshotterConfigWith(host, repo, auth, snapshotID, workDir string, o ConfigOptions) string {
	m := map[string]any{
		"device": map[string]any{
			"id": "/" + snapshotID,
			"backend": map[string]any{"type": "registry", "config": map[string]any{
				"host": host, "repo": repo, "auth": auth, "scheme": "http", "skip_verify": true,
				"timeout": 5, "connect_timeout": 5, "retry_limit": 2,
			}},
			"cache": map[string]any{"type": "blobcache", "config": map[string]any{
				"work_dir": workDir, "disable_indexed_map": false,
			}},
		},
		"mode": "direct", "digest_validate": false, "iostats_files": false, "enable_xattr": true,
		"access_pattern": o.AccessPattern,
		"amplify_io":     1 << 20,
		"fs_prefetch":    map[string]any{"enable": o.Prefetch, "prefetch_all": o.PrefetchAll, "threads_count": 8, "merging_size": 1 << 20},
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// PatternEntry is one entry of GET /api/v1/metrics/pattern.
type PatternEntry struct {
	Ino    uint64 `json:"ino"`
	NrRead uint64 `json:"nr_read"`
}

// Pattern asks the daemon for a mount's access pattern (the mount's
// config must have access_pattern on), in first-access order.
func (a KataAPI) Pattern(ctx context.Context, mountpoint string) ([]PatternEntry, error) {
	code, b, err := a.Do(ctx, http.MethodGet, "/api/v1/metrics/pattern?id="+url.PathEscape(mountpoint), nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/metrics/pattern: %d %s", code, b)
	}
	var out []PatternEntry
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("GET /api/v1/metrics/pattern: %w", err)
	}
	return out, nil
}

// PrefetchList turns an access pattern into a prefetch list: the paths
// of the regular files that were read, in first-access order. The
// pattern names inodes; their paths come from walking the image's
// bootstrap (a hard-linked file is listed by its first path).
func PrefetchList(bootstrap string, pattern []PatternEntry) ([]string, error) {
	img, err := rafs.Open(bootstrap, rafs.Options{})
	if err != nil {
		return nil, err
	}
	defer img.Close()
	paths := map[uint64]string{}
	if err := img.Walk(func(p string, n *rafs.Inode) error {
		if _, ok := paths[n.Ino]; !ok && n.IsRegular() {
			paths[n.Ino] = p
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var out []string
	for _, e := range pattern {
		if p, ok := paths[e.Ino]; ok && e.NrRead > 0 {
			out = append(out, p)
		}
	}
	return out, nil
}

// DecodeExtraOption is what Kata's runtime does with the rootfs mount's
// extraoption= value.
func DecodeExtraOption(opt string) (*ExtraOption, error) {
	b, err := base64.StdEncoding.DecodeString(opt)
	if err != nil {
		return nil, fmt.Errorf("extraoption: %w", err)
	}
	var e ExtraOption
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("extraoption: %w", err)
	}
	if e.Source == "" || e.Config == "" || e.Snapshotdir == "" {
		return nil, fmt.Errorf("extraoption: source, config and snapshotdir are required: %+v", e)
	}
	return &e, nil
}

// KataAPI is the runtime's client of the daemon's API socket.
type KataAPI struct{ c *http.Client }

func NewKataAPI(sock string) KataAPI {
	return KataAPI{c: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "unix", sock)
		}}}}
}

func (a KataAPI) Do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://unix"+path, rd)
	if err != nil {
		return 0, nil, err
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), nil
}

// WaitRunning polls GET /api/v1/daemon as the runtimes do.
func (a KataAPI) WaitRunning(ctx context.Context) error {
	var last string
	for i := 0; i < 100; i++ {
		code, b, err := a.Do(ctx, http.MethodGet, "/api/v1/daemon", nil)
		if err == nil && code == http.StatusOK {
			var info struct {
				State string `json:"state"`
			}
			if json.Unmarshal(b, &info) == nil && info.State == "RUNNING" {
				return nil
			}
		}
		last = fmt.Sprintf("%d %s %v", code, b, err)
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("daemon not RUNNING: %s", last)
}

// Mount sends a mount request (POST, DELETE); encode percent-encodes the mountpoint as runtime-rs
// does (the Go runtime sends it raw).
func (a KataAPI) Mount(ctx context.Context, method, mountpoint string, body any, encode bool) error {
	mp := mountpoint
	if encode {
		mp = url.QueryEscape(mountpoint)
	}
	code, b, err := a.Do(ctx, method, "/api/v1/mount?mountpoint="+mp, body)
	if err != nil {
		return err
	}
	if code != http.StatusNoContent {
		return fmt.Errorf("%s %s: %d %s", method, mountpoint, code, b)
	}
	return nil
}

// FirstLine finds the first line of a run's serial.log containing marker
// and returns when it was printed: the harness prefixes each line with
// the seconds since QEMU started.
func FirstLine(serial, marker string) (time.Duration, bool) {
	b, err := os.ReadFile(serial)
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, marker) {
			continue
		}
		fs := strings.Fields(l)
		if len(fs) == 0 {
			return 0, false
		}
		secs, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			return 0, false
		}
		return time.Duration(secs * float64(time.Second)), true
	}
	return 0, false
}

// RafsMount is one container's image as the runtime mounts it;
// PrefetchFiles, if any, go in the mount request's prefetch_files.
type RafsMount struct {
	CID, Bootstrap, Config string
	PrefetchFiles          []string
}

// StartSandbox does what a Kata runtime does once it has started the
// daemon: wait until it is RUNNING, mount the sandbox's shared directory
// at /containers and each container's image at /rafs/<cid>/lowerdir.
func (a KataAPI) StartSandbox(ctx context.Context, shared string, images []RafsMount, encode bool) error {
	if err := a.WaitRunning(ctx); err != nil {
		return err
	}
	if err := a.Mount(ctx, http.MethodPost, "/containers",
		map[string]string{"fs_type": "passthrough_fs", "source": shared, "config": ""}, encode); err != nil {
		return err
	}
	for _, im := range images {
		body := map[string]any{"fs_type": "rafs", "source": im.Bootstrap, "config": im.Config}
		if len(im.PrefetchFiles) > 0 {
			body["prefetch_files"] = im.PrefetchFiles
		}
		if err := a.Mount(ctx, http.MethodPost, "/rafs/"+im.CID+"/lowerdir", body, encode); err != nil {
			return err
		}
	}
	return nil
}
