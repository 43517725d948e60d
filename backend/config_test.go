package backend

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tests := []struct {
		name, in string
		check    func(t *testing.T, c *Config)
		err      string
	}{
		{name: "v1 snapshotter registry", in: `{"device":{"id":"x","backend":{"type":"registry","config":{"host":"r:5000","repo":"ns/app","auth":"dXNlcjpwYXNz","retry_limit":2,"unknown":1}},"cache":{"type":"blobcache","config":{"work_dir":"/c"}}},"mode":"direct","digest_validate":true,"enable_xattr":true,"fs_prefetch":{"enable":true,"threads_count":4}}`,
			check: func(t *testing.T, c *Config) {
				r := c.Backend.Registry
				if c.Version != 1 || c.Backend.Type != "registry" || r.Host != "r:5000" || r.Repo != "ns/app" || r.Scheme != "https" ||
					r.Timeout != 5 || r.ConnectTimeout != 5 || r.RetryLimit != 2 || !r.Proxy.Fallback || r.Proxy.CheckInterval != 5 {
					t.Errorf("registry %+v", r)
				}
				if !c.DigestValidate() || !c.Rafs.EnableXattr || c.Rafs.BatchSize != mib || c.Cache.WorkDir() != "/c" {
					t.Errorf("rafs %+v cache %+v", c.Rafs, c.Cache)
				}
				want := PrefetchConfig{Enable: true, Threads: 4, BatchSize: mib, PrefetchAll: true}
				if c.Rafs.Prefetch != want || c.Cache.Prefetch != want {
					t.Errorf("prefetch %+v / %+v", c.Rafs.Prefetch, c.Cache.Prefetch)
				}
			}},
		{name: "v1 amplify_io 0", in: `{"device":{"backend":{"type":"localfs","config":{"blob_file":"/b/x"}}},"mode":"cached","amplify_io":0}`,
			check: func(t *testing.T, c *Config) {
				if c.Rafs.BatchSize != 0 || c.Rafs.Mode != "cached" || c.Backend.LocalFS.BlobFile != "/b/x" {
					t.Errorf("%+v", c.Rafs)
				}
			}},
		{name: "v1 without mode", in: `{"device":{"backend":{"type":"localfs","config":{"dir":"/b"}}}}`, err: "mode is required"},
		{name: "v1 http-proxy", in: `{"device":{"backend":{"type":"http-proxy","config":{"addr":"http://a"}}},"mode":"direct"}`, err: "not allowed in a v1 config"},
		{name: "v2 json s3", in: `{"version":2,"backend":{"type":"s3","s3":{"region":"us","bucket_name":"b","object_prefix":"p/","scheme":"http","endpoint":"127.0.0.1:1"}}}`,
			check: func(t *testing.T, c *Config) {
				s := c.Backend.S3
				if s.Region != "us" || s.BucketName != "b" || s.ObjectPrefix != "p/" || s.Scheme != "http" || s.Timeout != 5 {
					t.Errorf("%+v", s)
				}
				if c.Rafs.Prefetch.PrefetchAll || c.Rafs.Prefetch.Threads != 8 || c.Rafs.Mode != "direct" {
					t.Errorf("v2 rafs defaults %+v", c.Rafs)
				}
			}},
		{name: "v2 http-proxy socket", in: `{"version":2,"backend":{"type":"http-proxy","http-proxy":{"addr":"` + sock + `","path":"/blobs"}}}`,
			check: func(t *testing.T, c *Config) {
				if c.Backend.HTTPProxy.Addr != sock {
					t.Errorf("%+v", c.Backend.HTTPProxy)
				}
			}},
		{name: "v2 toml registry", in: "version = 2\nid = \"i\"\n[backend]\ntype = \"registry\"\n[backend.registry]\nhost = \"h\"\nrepo = \"r\"\nscheme = \"http\"\n[backend.registry.proxy]\nurl = \"http://127.0.0.1:65001\"\nfallback = false\n[[backend.registry.mirrors]]\nhost = \"http://m\"\n[cache]\ntype = \"filecache\"\n[cache.filecache]\nwork_dir = \"/w\"\n[cache.prefetch]\nenable = true\nthreads = 2\n[rafs]\nvalidate = true\n",
			check: func(t *testing.T, c *Config) {
				r := c.Backend.Registry
				if c.ID != "i" || r.Scheme != "http" || r.Proxy.URL != "http://127.0.0.1:65001" || r.Proxy.Fallback || len(r.Mirrors) != 1 {
					t.Errorf("%+v", r)
				}
				if c.Cache.WorkDir() != "/w" || c.Cache.Prefetch.Threads != 2 || c.Cache.Prefetch.BatchSize != mib || !c.DigestValidate() {
					t.Errorf("%+v", c.Cache)
				}
			}},
		{name: "v2 toml dotted", in: "version = 2\nbackend.type = \"localfs\"\nbackend.localfs.dir = \"/b\"\n",
			check: func(t *testing.T, c *Config) {
				if c.Backend.LocalFS.Dir != "/b" {
					t.Error(c.Backend.LocalFS)
				}
			}},
		{name: "toml version 1", in: "version = 1\n[backend]\ntype = \"localfs\"\n", err: "want 2"},
		{name: "neither", in: "[[[", err: "neither JSON nor v2 TOML"},
		{name: "unknown type", in: `{"version":2,"backend":{"type":"ftp"}}`, err: `unknown backend type "ftp"`},
		{name: "registry without repo", in: `{"version":2,"backend":{"type":"registry","registry":{"host":"h"}}}`, err: "needs host and repo"},
		{name: "bad base64 auth", in: `{"version":2,"backend":{"type":"registry","registry":{"host":"h","repo":"r","auth":"c2VjcmV0!"}}}`, err: "not valid base64"},
		{name: "auth without colon", in: `{"version":2,"backend":{"type":"registry","registry":{"host":"h","repo":"r","auth":"c2VjcmV0"}}}`, err: "not user:password"},
		{name: "oss without bucket", in: `{"version":2,"backend":{"type":"oss","oss":{"endpoint":"e"}}}`, err: "endpoint and bucket_name"},
		{name: "s3 without region", in: `{"version":2,"backend":{"type":"s3","s3":{"bucket_name":"b"}}}`, err: "region and bucket_name"},
		{name: "relative socket", in: `{"version":2,"backend":{"type":"http-proxy","http-proxy":{"addr":"rel/sock"}}}`, err: "absolute unix socket path"},
		{name: "missing socket", in: `{"version":2,"backend":{"type":"http-proxy","http-proxy":{"addr":"/nonexistent/sock"}}}`, err: "unix socket"},
		{name: "cache without work_dir", in: `{"version":2,"backend":{"type":"localfs","localfs":{"dir":"/b"}},"cache":{"type":"blobcache"}}`, err: "needs a work_dir"},
		{name: "unknown cache", in: `{"version":2,"backend":{"type":"localfs","localfs":{"dir":"/b"}},"cache":{"type":"redis"}}`, err: "unknown cache type"},
		{name: "prefetch threads", in: `{"version":2,"backend":{"type":"localfs","localfs":{"dir":"/b"}},"rafs":{"prefetch":{"enable":true,"threads":0}}}`, err: "threads 0"},
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
				if strings.Contains(err.Error(), "c2VjcmV0") {
					t.Errorf("error quotes the auth: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestParseChallenge(t *testing.T) {
	tests := []struct {
		in     string
		scheme string
		params map[string]string
		err    bool
	}{
		{in: `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:ns/app:pull"`, scheme: "bearer",
			params: map[string]string{"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:ns/app:pull"}},
		{in: `Basic realm="Registry Realm"`, scheme: "basic", params: map[string]string{"realm": "Registry Realm"}},
		{in: `bearer realm=http://a/t, service=s`, scheme: "bearer", params: map[string]string{"realm": "http://a/t", "service": "s"}},
		{in: `Bearer realm="a\"b"`, scheme: "bearer", params: map[string]string{"realm": `a"b`}},
		{in: `Bearer realm="unterminated`, err: true},
		{in: ``, err: true},
		{in: `Bearer novalue`, err: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			c, err := ParseChallenge(tc.in)
			if tc.err {
				if err == nil {
					t.Fatalf("parsed %+v", c)
				}
				return
			}
			if err != nil || c.Scheme != tc.scheme || len(c.Params) != len(tc.params) {
				t.Fatalf("%+v %v", c, err)
			}
			for k, v := range tc.params {
				if c.Params[k] != v {
					t.Errorf("%s = %q, want %q", k, c.Params[k], v)
				}
			}
		})
	}
}
