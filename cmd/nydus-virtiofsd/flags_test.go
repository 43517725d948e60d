package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseVirtiofsd(t *testing.T) {
	tests := []struct {
		name string
		args string
		want func(c *daemonConfig)
		warn int
	}{
		{
			// Kata's Go runtime (virtiofsd.go) with its default extra args and --xattr.
			name: "kata go runtime",
			args: "--syslog --cache=auto --shared-dir=/run/s --fd=3 --thread-pool-size=1 --announce-submounts --xattr",
			want: func(c *daemonConfig) {
				c.Syslog, c.SharedDir, c.FD, c.ThreadPoolSize, c.AnnounceSubmounts, c.Xattr = true, "/run/s", 3, 1, true, true
			},
		},
		{
			// Kata's runtime-rs (share_virtio_fs_standalone.rs): space-separated values.
			name: "kata runtime-rs",
			args: "--socket-path vfs.sock --shared-dir /run/s --cache never --thread-pool-size=1 --no-announce-submounts --allow-direct-io",
			want: func(c *daemonConfig) {
				c.SocketPath, c.SharedDir, c.Cache, c.ThreadPoolSize, c.AnnounceSubmounts, c.AllowDirectIO = "vfs.sock", "/run/s", "never", 1, false, true
			},
		},
		{
			name: "c virtiofsd -o form",
			args: "--socket-path=/tmp/v.sock -o source=/srv,cache=always -o xattr -o log_level=err",
			want: func(c *daemonConfig) {
				c.SocketPath, c.SharedDir, c.Cache, c.Xattr, c.LogLevel = "/tmp/v.sock", "/srv", "always", true, "error"
			},
		},
		{
			name: "escaped comma in -o",
			args: `--socket-path=s -o source=/srv/a\,b,cache=never`,
			want: func(c *daemonConfig) { c.SocketPath, c.SharedDir, c.Cache = "s", "/srv/a,b", "never" },
		},
		{
			name: "c cache=none means never",
			args: "--socket-path=s -osource=/srv,cache=none",
			want: func(c *daemonConfig) { c.SocketPath, c.SharedDir, c.Cache = "s", "/srv", "never" },
		},
		{
			name: "rafs image root",
			args: "--socket-path=s --bootstrap=/img/boot --blob-dir /img/blobs --request-queues 2",
			want: func(c *daemonConfig) {
				c.SocketPath, c.Bootstrap, c.BlobDir, c.RequestQueues = "s", "/img/boot", "/img/blobs", 2
			},
		},
		{
			name: "unknown and unimplemented options warn",
			args: "--socket-path=s --shared-dir=/d --frobnicate --answer=42 --colour blue --writeback --inode-file-handles=never -o flock",
			want: func(c *daemonConfig) { c.SocketPath, c.SharedDir, c.InodeFileHandles = "s", "/d", "never" },
			warn: 5,
		},
		{
			name: "socket group, file limit, no readdirplus",
			args: "--socket-path=s --shared-dir=/d --socket-group kvm --rlimit-nofile=65536 --no-readdirplus",
			want: func(c *daemonConfig) {
				c.SocketPath, c.SharedDir, c.SocketGroup, c.RlimitNofile, c.NoReadDirPlus = "s", "/d", "kvm", 65536, true
			},
		},
		{
			name: "-o readdirplus after no_readdirplus",
			args: "--socket-path=s -o source=/d,no_readdirplus,readdirplus --rlimit-nofile 0",
			want: func(c *daemonConfig) { c.SocketPath, c.SharedDir, c.RlimitNofile = "s", "/d", 0 },
		},
		{
			name: "print capabilities",
			args: "--print-capabilities",
			want: func(c *daemonConfig) { c.PrintCapabilities = true },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVirtiofsd(strings.Fields(tc.args))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			want := defaultConfig()
			tc.want(&want)
			if len(got.Warnings) != tc.warn {
				t.Errorf("warnings = %q, want %d", got.Warnings, tc.warn)
			}
			got.Warnings, want.Warnings = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseVirtiofsdErrors(t *testing.T) {
	tests := []struct{ args, want string }{
		{"--cache=sometimes", "--cache"},
		{"--fd=x", "--fd"},
		{"--socket-path", "needs a value"},
		{"--xattr=yes", "takes no value"},
		{"-o cache=bogus", "-o cache=bogus"},
		{"-o", "-o needs"},
		{"stray", "unexpected argument"},
		{"--sandbox=jail", "--sandbox"},
		{"--log-level=loud", "--log-level"},
		{"--rlimit-nofile=-1", "--rlimit-nofile"},
		{"--rlimit-nofile=many", "--rlimit-nofile"},
	}
	for _, tc := range tests {
		_, err := parseVirtiofsd(strings.Fields(tc.args))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse %q: err = %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		args string
		ok   bool
	}{
		{"--socket-path=s --shared-dir=/d", true},
		{"--fd=3 --shared-dir=/d", true},
		{"--socket-path=s --bootstrap=/b --blob-dir=/x", true},
		{"--shared-dir=/d", false},
		{"--socket-path=s", false},
		{"--socket-path=s --fd=3 --shared-dir=/d", false},
		{"--socket-path=s --shared-dir=/d --bootstrap=/b", false},
		{"--socket-path=s --shared-dir=/d --request-queues=0", false},
	}
	for _, tc := range tests {
		c, err := parseVirtiofsd(strings.Fields(tc.args))
		if err != nil {
			t.Fatalf("parse %q: %v", tc.args, err)
		}
		if err := c.validate(); (err == nil) != tc.ok {
			t.Errorf("validate %q: err = %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}

// TestValidateNydusdPrefetchFiles: --prefetch-files names paths in the
// --bootstrap image; without one there is nothing to prefetch from.
func TestValidateNydusdPrefetchFiles(t *testing.T) {
	for _, tc := range []struct {
		args string
		ok   bool
	}{
		{"--sock s -B /img/boot --prefetch-files /list", true},
		{"--sock s --apisock a --prefetch-files /list", false},
	} {
		c, err := parseNydusdVirtiofs(strings.Fields(tc.args))
		if err != nil {
			t.Fatalf("parse %q: %v", tc.args, err)
		}
		if err := c.validate(); (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "--prefetch-files")) {
			t.Errorf("validate %q: err = %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}

func TestParseNydusdVirtiofs(t *testing.T) {
	tests := []struct {
		name string
		args string
		want func(c *daemonConfig)
		warn int
	}{
		{
			// Kata's Go runtime, nydusd.args().
			name: "kata go runtime",
			args: "--log-level info --apisock /run/vc/vm/x/nydusd-api.sock --sock /run/vc/vm/x/vhost-fs.sock",
			want: func(c *daemonConfig) {
				c.APISock, c.SocketPath = "/run/vc/vm/x/nydusd-api.sock", "/run/vc/vm/x/vhost-fs.sock"
			},
		},
		{
			// runtime-rs passes --hybrid-mode, relative sockets, and the virtiofsd extra args.
			name: "kata runtime-rs",
			args: "--hybrid-mode --log-level debug --apisock nydusd-api.sock --sock virtiofsd.sock --thread-pool-size=1 --announce-submounts",
			want: func(c *daemonConfig) {
				c.LogLevel, c.APISock, c.SocketPath, c.ThreadPoolSize, c.AnnounceSubmounts = "debug", "nydusd-api.sock", "virtiofsd.sock", 1, true
			},
		},
		{
			name: "short options and an image",
			args: "-A api.sock -l warn --sock s -B /img/boot -D /img/blobs -C /etc/nydusd.json --prefetch-files /usr/bin -m /sub --id d1 --supervisor /run/sv.sock",
			want: func(c *daemonConfig) {
				c.APISock, c.LogLevel, c.SocketPath, c.Bootstrap, c.BlobDir, c.ConfigFile = "api.sock", "warn", "s", "/img/boot", "/img/blobs", "/etc/nydusd.json"
				c.VirtualMountpoint, c.ID, c.Supervisor, c.PrefetchFiles = "/sub", "d1", "/run/sv.sock", "/usr/bin"
			},
			warn: 1, // --supervisor not supported
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseNydusdVirtiofs(strings.Fields(tc.args))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			want := defaultConfig()
			want.Sandbox, want.Nydusd, want.VirtualMountpoint, want.SocketFlag = "none", true, "/", "--sock"
			tc.want(&want)
			if len(got.Warnings) != tc.warn {
				t.Errorf("warnings = %q, want %d", got.Warnings, tc.warn)
			}
			got.Warnings, want.Warnings = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}
