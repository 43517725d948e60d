package rafs

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, in string
		want     Config
		err      string
	}{
		{name: "v1 localfs dir", in: `{"device":{"backend":{"type":"localfs","config":{"dir":"/blobs"}},"cache":{"type":"blobcache"}},"mode":"direct","digest_validate":true,"enable_xattr":true}`,
			want: Config{Version: 1, BackendType: "localfs", DigestValidate: true, EnableXattr: true}},
		{name: "v1 blob_file", in: `{"device":{"backend":{"type":"localfs","config":{"blob_file":"/b/x"}}}}`,
			want: Config{Version: 1, BackendType: "localfs"}},
		{name: "v2 localfs", in: `{"version":2,"backend":{"type":"localfs","localfs":{"dir":"/blobs","alt_dirs":["/a"]}},"rafs":{"validate":true}}`,
			want: Config{Version: 2, BackendType: "localfs", DigestValidate: true}},
		{name: "v1 registry", in: `{"device":{"backend":{"type":"registry","config":{"host":"r"}}}}`, err: "not supported yet"},
		{name: "v2 http-proxy", in: `{"version":2,"backend":{"type":"http-proxy","http-proxy":{"addr":"/s"}}}`, err: "not supported yet"},
		{name: "v2 toml", in: "version = 2\n[backend]\ntype = \"localfs\"\n[backend.localfs]\ndir = \"/blobs\"\n[rafs]\nvalidate = true\nenable_xattr = true\n",
			want: Config{Version: 2, BackendType: "localfs", DigestValidate: true, EnableXattr: true}},
		{name: "v2 toml dotted", in: "version = 2\nbackend.type = \"localfs\"\nbackend.localfs.dir = \"/b\"\n",
			want: Config{Version: 2, BackendType: "localfs"}},
		{name: "toml version 1", in: "version = 1\n[backend]\ntype = \"localfs\"\n", err: "want 2"},
		{name: "toml registry", in: "version = 2\n[backend]\ntype = \"registry\"\n[backend.registry]\nhost = \"r\"\n", err: "not supported yet"},
		{name: "neither", in: "[[[", err: "neither JSON nor v2 TOML"},
		{name: "localfs without dir", in: `{"version":2,"backend":{"type":"localfs","localfs":{}}}`, err: "needs dir"},
		{name: "version 3", in: `{"version":3}`, err: "unknown config version"},
		{name: "garbage", in: `{"device":`, err: "json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Version != tc.want.Version || c.BackendType != tc.want.BackendType || c.DigestValidate != tc.want.DigestValidate || c.EnableXattr != tc.want.EnableXattr {
				t.Errorf("got %+v", c)
			}
			if c.Backend() == nil {
				t.Error("no backend")
			}
		})
	}
}
