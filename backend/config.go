package backend

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"
)

// ErrBadConfig is wrapped by every error that refuses a configuration, so
// that the API can answer it with a 4xx.
var ErrBadConfig = errors.New("bad config")

// Config is a nydusd configuration (v1 "RafsConfig" JSON, v2 JSON or v2
// TOML) in its v2 shape, with nydusd's defaults filled in.
type Config struct {
	// Version is the format the config was written in: 1 or 2.
	Version int           `json:"version" toml:"version"`
	ID      string        `json:"id" toml:"id"`
	Backend BackendConfig `json:"backend" toml:"backend"`
	Cache   CacheConfig   `json:"cache" toml:"cache"`
	Rafs    RafsConfig    `json:"rafs" toml:"rafs"`
}

// BackendConfig is the backend section: a type and one table per type.
type BackendConfig struct {
	Type      string          `json:"type" toml:"type"`
	LocalFS   LocalFSConfig   `json:"localfs" toml:"localfs"`
	Registry  RegistryConfig  `json:"registry" toml:"registry"`
	OSS       OSSConfig       `json:"oss" toml:"oss"`
	S3        S3Config        `json:"s3" toml:"s3"`
	HTTPProxy HTTPProxyConfig `json:"http-proxy" toml:"http-proxy"`
}

// LocalFSConfig is the localfs table.
type LocalFSConfig struct {
	BlobFile string   `json:"blob_file" toml:"blob_file"`
	Dir      string   `json:"dir" toml:"dir"`
	AltDirs  []string `json:"alt_dirs" toml:"alt_dirs"`
}

// ConnConfig holds the connection keys every remote backend shares.
// Timeouts are seconds; 0 means none.
type ConnConfig struct {
	SkipVerify     bool           `json:"skip_verify" toml:"skip_verify"`
	CACertFiles    []string       `json:"ca_cert_files" toml:"ca_cert_files"`
	Timeout        int            `json:"timeout" toml:"timeout"`
	ConnectTimeout int            `json:"connect_timeout" toml:"connect_timeout"`
	RetryLimit     int            `json:"retry_limit" toml:"retry_limit"`
	Proxy          ProxyConfig    `json:"proxy" toml:"proxy"`
	Mirrors        []MirrorConfig `json:"mirrors" toml:"mirrors"`
}

// ProxyConfig is a forward (P2P) proxy in front of a remote backend.
type ProxyConfig struct {
	URL               string `json:"url" toml:"url"`
	PingURL           string `json:"ping_url" toml:"ping_url"`
	Fallback          bool   `json:"fallback" toml:"fallback"`
	CheckInterval     int    `json:"check_interval" toml:"check_interval"`
	UseHTTP           bool   `json:"use_http" toml:"use_http"`
	CheckPauseElapsed int    `json:"check_pause_elapsed" toml:"check_pause_elapsed"`
}

// MirrorConfig is a registry mirror (nydusd up to v2.3.4).
type MirrorConfig struct {
	Host                string            `json:"host" toml:"host"`
	Headers             map[string]string `json:"headers" toml:"headers"`
	PingURL             string            `json:"ping_url" toml:"ping_url"`
	HealthCheckInterval int               `json:"health_check_interval" toml:"health_check_interval"`
	FailureLimit        int               `json:"failure_limit" toml:"failure_limit"`
}

// RegistryConfig is the registry table. Auth is base64 of "user:pass".
type RegistryConfig struct {
	ConnConfig
	Scheme             string `json:"scheme" toml:"scheme"`
	Host               string `json:"host" toml:"host"`
	Repo               string `json:"repo" toml:"repo"`
	Auth               string `json:"auth" toml:"auth"`
	RegistryToken      string `json:"registry_token" toml:"registry_token"`
	BlobURLScheme      string `json:"blob_url_scheme" toml:"blob_url_scheme"`
	BlobRedirectedHost string `json:"blob_redirected_host" toml:"blob_redirected_host"`
}

// OSSConfig is the oss table.
type OSSConfig struct {
	ConnConfig
	Scheme          string `json:"scheme" toml:"scheme"`
	Endpoint        string `json:"endpoint" toml:"endpoint"`
	BucketName      string `json:"bucket_name" toml:"bucket_name"`
	ObjectPrefix    string `json:"object_prefix" toml:"object_prefix"`
	AccessKeyID     string `json:"access_key_id" toml:"access_key_id"`
	AccessKeySecret string `json:"access_key_secret" toml:"access_key_secret"`
}

// S3Config is the s3 table: oss's keys plus region.
type S3Config struct {
	OSSConfig
	Region string `json:"region" toml:"region"`
}

// HTTPProxyConfig is the http-proxy table. Addr is http(s)://host:port or
// the absolute path of a unix socket.
type HTTPProxyConfig struct {
	ConnConfig
	Addr string `json:"addr" toml:"addr"`
	Path string `json:"path" toml:"path"`
}

// CacheConfig is the cache section. Caching itself is the blob cache's
// job; the backends only parse it.
type CacheConfig struct {
	Type       string          `json:"type" toml:"type"`
	Compressed bool            `json:"compressed" toml:"compressed"`
	Validate   bool            `json:"validate" toml:"validate"`
	FileCache  FileCacheConfig `json:"filecache" toml:"filecache"`
	FsCache    FsCacheConfig   `json:"fscache" toml:"fscache"`
	Prefetch   PrefetchConfig  `json:"prefetch" toml:"prefetch"`
}

// FileCacheConfig is the filecache (alias blobcache) table.
type FileCacheConfig struct {
	WorkDir                    string `json:"work_dir" toml:"work_dir"`
	DisableIndexedMap          bool   `json:"disable_indexed_map" toml:"disable_indexed_map"`
	EnableEncryption           bool   `json:"enable_encryption" toml:"enable_encryption"`
	EncryptionKey              string `json:"encryption_key" toml:"encryption_key"`
	EnableConvergentEncryption bool   `json:"enable_convergent_encryption" toml:"enable_convergent_encryption"`
	// MaxSize is our extension beyond nydusd (which never evicts): a cap
	// in bytes on the cache directory's blob files; 0 means none.
	MaxSize int64 `json:"max_size" toml:"max_size"`
}

// FsCacheConfig is the fscache table.
type FsCacheConfig struct {
	WorkDir string `json:"work_dir" toml:"work_dir"`
}

// PrefetchConfig is a v2 prefetch table (cache.prefetch or rafs.prefetch).
// BatchSize and BandwidthLimit are bytes and bytes/s.
type PrefetchConfig struct {
	Enable         bool `json:"enable" toml:"enable"`
	Threads        int  `json:"threads" toml:"threads"`
	BatchSize      int  `json:"batch_size" toml:"batch_size"`
	BandwidthLimit int  `json:"bandwidth_limit" toml:"bandwidth_limit"`
	PrefetchAll    bool `json:"prefetch_all" toml:"prefetch_all"`
	StreamPrefetch bool `json:"stream_prefetch" toml:"stream_prefetch"`
}

// RafsConfig is the rafs section. BatchSize is v1's amplify_io.
type RafsConfig struct {
	Mode            string         `json:"mode" toml:"mode"`
	BatchSize       int            `json:"batch_size" toml:"batch_size"`
	Validate        bool           `json:"validate" toml:"validate"`
	EnableXattr     bool           `json:"enable_xattr" toml:"enable_xattr"`
	IOStatsFiles    bool           `json:"iostats_files" toml:"iostats_files"`
	AccessPattern   bool           `json:"access_pattern" toml:"access_pattern"`
	LatestReadFiles bool           `json:"latest_read_files" toml:"latest_read_files"`
	Prefetch        PrefetchConfig `json:"prefetch" toml:"prefetch"`
}

// DigestValidate reports whether chunk data is to be checked against its
// digest (rafs.validate or cache.validate).
func (c *Config) DigestValidate() bool { return c.Rafs.Validate || c.Cache.Validate }

// WorkDir is the cache's work directory for its type ("" for none).
func (c *CacheConfig) WorkDir() string {
	switch c.Type {
	case "fscache":
		return c.FsCache.WorkDir
	case "blobcache", "filecache":
		return c.FileCache.WorkDir
	}
	return ""
}

const (
	maxConfigSize    = 1 << 20
	mib              = 1 << 20
	maxPrefetchBatch = 0x10000000
	maxAmplify       = 256 * mib
)

func defaultConn() ConnConfig {
	return ConnConfig{Timeout: 5, ConnectTimeout: 5,
		Proxy: ProxyConfig{Fallback: true, CheckInterval: 5, CheckPauseElapsed: 300}}
}

// defaultConfig is a v2 config holding nydusd's defaults, into which a
// file is decoded (absent keys keep them).
func defaultConfig() Config {
	conn := defaultConn()
	oss := OSSConfig{ConnConfig: conn, Scheme: "https"}
	prefetch := PrefetchConfig{Threads: 8, BatchSize: mib}
	return Config{
		Version: 2,
		Backend: BackendConfig{
			Registry:  RegistryConfig{ConnConfig: conn, Scheme: "https"},
			OSS:       oss,
			S3:        S3Config{OSSConfig: oss},
			HTTPProxy: HTTPProxyConfig{ConnConfig: conn},
		},
		Cache: CacheConfig{Prefetch: prefetch},
		Rafs:  RafsConfig{Mode: "direct", BatchSize: mib, Prefetch: prefetch},
	}
}

// LoadConfig reads a nydusd configuration file (at most 1 MiB).
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(&limitReader{f, maxConfigSize + 1}); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c, err := ParseConfig(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

type limitReader struct {
	f *os.File
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("config larger than 1 MiB")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}

// ParseConfig decodes a nydusd configuration as nydusd does: v2 JSON, then
// v2 TOML, then v1 JSON (converted to v2). Unknown keys are ignored. The
// result is validated with nydusd's rules; a refused config's error wraps
// ErrBadConfig and never quotes a secret.
func ParseConfig(data []byte) (*Config, error) {
	c, err := parseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	return c, nil
}

func parseConfig(data []byte) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("%d bytes is larger than 1 MiB", len(data))
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		var probe struct {
			Version json.RawMessage `json:"version"`
		}
		if err := json.Unmarshal(data, &probe); err != nil {
			return nil, fmt.Errorf("json: %s", jsonErr(err))
		}
		switch v := string(probe.Version); v {
		case "2":
			c := defaultConfig()
			if err := json.Unmarshal(data, &c); err != nil {
				return nil, fmt.Errorf("v2 json: %s", jsonErr(err))
			}
			c.Version = 2
			return &c, nil
		case "", "1", "null":
			return parseV1(data)
		default:
			return nil, fmt.Errorf("unknown config version %.20s", v)
		}
	}
	c := defaultConfig()
	c.Version = 0
	if err := toml.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("neither JSON nor v2 TOML: %s", tomlErr(err))
	}
	if c.Version != 2 {
		return nil, fmt.Errorf("toml config: version %d, want 2", c.Version)
	}
	return &c, nil
}

// jsonErr describes a JSON decoding error without quoting input bytes
// (which may be secrets).
func jsonErr(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("%s: want %s, got %s", te.Field, te.Type, te.Value)
	}
	if errors.Is(err, errUnexpectedEOF) || strings.Contains(err.Error(), "unexpected end") {
		return "unexpected end of input"
	}
	return "malformed"
}

var errUnexpectedEOF = errors.New("unexpected end of JSON input")

func tomlErr(err error) string {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Sprintf("line %d column %d", row, col)
	}
	var se *toml.StrictMissingError
	if errors.As(err, &se) {
		return "unknown key"
	}
	return "malformed"
}

// v1 is the legacy RafsConfig shape.
type v1Config struct {
	Device struct {
		ID      string `json:"id"`
		Backend struct {
			Type   string          `json:"type"`
			Config json.RawMessage `json:"config"`
		} `json:"backend"`
		Cache struct {
			Type           string          `json:"type"`
			Compressed     bool            `json:"compressed"`
			Validate       bool            `json:"validate"`
			Config         json.RawMessage `json:"config"`
			PrefetchConfig *v1Prefetch     `json:"prefetch_config"`
		} `json:"cache"`
	} `json:"device"`
	Mode            *string    `json:"mode"`
	DigestValidate  bool       `json:"digest_validate"`
	IOStatsFiles    bool       `json:"iostats_files"`
	EnableXattr     bool       `json:"enable_xattr"`
	AccessPattern   bool       `json:"access_pattern"`
	LatestReadFiles bool       `json:"latest_read_files"`
	AmplifyIO       *int       `json:"amplify_io"`
	FsPrefetch      v1Prefetch `json:"fs_prefetch"`
}

type v1Prefetch struct {
	Enable         bool `json:"enable"`
	ThreadsCount   int  `json:"threads_count"`
	MergingSize    int  `json:"merging_size"`
	BandwidthRate  int  `json:"bandwidth_rate"`
	PrefetchAll    bool `json:"prefetch_all"`
	StreamPrefetch bool `json:"stream_prefetch"`
}

func (p v1Prefetch) v2() PrefetchConfig {
	return PrefetchConfig{Enable: p.Enable, Threads: p.ThreadsCount, BatchSize: p.MergingSize,
		BandwidthLimit: p.BandwidthRate, PrefetchAll: p.PrefetchAll, StreamPrefetch: p.StreamPrefetch}
}

func parseV1(data []byte) (*Config, error) {
	v := v1Config{FsPrefetch: v1Prefetch{ThreadsCount: 8, MergingSize: mib, PrefetchAll: true}}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("v1 json: %s", jsonErr(err))
	}
	if v.Mode == nil {
		return nil, errors.New("v1 config: mode is required (direct or cached)")
	}
	c := defaultConfig()
	c.Version = 1
	c.ID = v.Device.ID
	b := &c.Backend
	b.Type = v.Device.Backend.Type
	var target any
	switch b.Type {
	case "localfs":
		target = &b.LocalFS
	case "registry":
		target = &b.Registry
	case "oss":
		target = &b.OSS
	case "s3":
		target = &b.S3
	case "localdisk":
		target = &struct{}{}
	case "":
		return nil, errors.New("no backend type")
	default:
		// v1's converter knows only these; http-proxy exists in v2 only.
		return nil, fmt.Errorf("backend type %q is not allowed in a v1 config", b.Type)
	}
	if cfg := v.Device.Backend.Config; len(cfg) > 0 && string(cfg) != "null" {
		if err := json.Unmarshal(cfg, target); err != nil {
			return nil, fmt.Errorf("v1 %s config: %s", b.Type, jsonErr(err))
		}
	}
	ca := v.Device.Cache
	c.Cache.Type, c.Cache.Compressed, c.Cache.Validate = ca.Type, ca.Compressed, ca.Validate
	if len(ca.Config) > 0 && string(ca.Config) != "null" {
		var wd FileCacheConfig
		if err := json.Unmarshal(ca.Config, &wd); err != nil {
			return nil, fmt.Errorf("v1 cache config: %s", jsonErr(err))
		}
		c.Cache.FileCache = wd
		c.Cache.FsCache.WorkDir = wd.WorkDir
	}
	if ca.PrefetchConfig != nil {
		c.Cache.Prefetch = ca.PrefetchConfig.v2()
	}
	c.Rafs = RafsConfig{Mode: *v.Mode, BatchSize: mib, Validate: v.DigestValidate, EnableXattr: v.EnableXattr,
		IOStatsFiles: v.IOStatsFiles, AccessPattern: v.AccessPattern, LatestReadFiles: v.LatestReadFiles,
		Prefetch: v.FsPrefetch.v2()}
	if v.AmplifyIO != nil {
		c.Rafs.BatchSize = *v.AmplifyIO
	}
	// nydusd copies fs_prefetch into the cache's prefetch when only the
	// former is on.
	if c.Rafs.Prefetch.Enable && !c.Cache.Prefetch.Enable {
		c.Cache.Prefetch = c.Rafs.Prefetch
	}
	return &c, nil
}

// Validate applies nydusd's rules to a config.
func (c *Config) Validate() error {
	switch c.Cache.Type {
	case "", "dummycache":
	case "blobcache", "filecache", "fscache":
		if c.Cache.WorkDir() == "" {
			return fmt.Errorf("cache type %s needs a work_dir", c.Cache.Type)
		}
	default:
		return fmt.Errorf("unknown cache type %q", short(c.Cache.Type))
	}
	for _, p := range []struct {
		name string
		p    PrefetchConfig
	}{{"cache.prefetch", c.Cache.Prefetch}, {"rafs.prefetch", c.Rafs.Prefetch}} {
		if !p.p.Enable {
			continue
		}
		if p.p.BatchSize < 0 || p.p.BatchSize > maxPrefetchBatch {
			return fmt.Errorf("%s: batch_size %d out of range 0..%#x", p.name, p.p.BatchSize, maxPrefetchBatch)
		}
		if p.p.Threads < 1 || p.p.Threads > 1024 {
			return fmt.Errorf("%s: threads %d out of range 1..1024", p.name, p.p.Threads)
		}
		if p.p.BandwidthLimit < 0 {
			return fmt.Errorf("%s: negative bandwidth limit", p.name)
		}
	}
	switch c.Rafs.Mode {
	case "direct", "cached":
	default:
		return fmt.Errorf("rafs mode %q, want direct or cached", short(c.Rafs.Mode))
	}
	if c.Rafs.BatchSize < 0 || c.Rafs.BatchSize > maxAmplify {
		return fmt.Errorf("rafs batch_size (amplify_io) %d out of range 0..256 MiB", c.Rafs.BatchSize)
	}
	return c.Backend.Validate()
}

func short(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// Validate checks the table of the selected backend type.
func (b *BackendConfig) Validate() error {
	switch b.Type {
	case "localfs":
		if b.LocalFS.Dir == "" && b.LocalFS.BlobFile == "" {
			return errors.New("localfs backend needs dir or blob_file")
		}
		return nil
	case "registry":
		r := &b.Registry
		if r.Host == "" || r.Repo == "" {
			return errors.New("registry backend needs host and repo")
		}
		if err := checkScheme(r.Scheme); err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		if r.Auth != "" {
			if _, _, err := DecodeAuth(r.Auth); err != nil {
				return fmt.Errorf("registry: %w", err)
			}
		}
		if r.BlobURLScheme != "" {
			if err := checkScheme(r.BlobURLScheme); err != nil {
				return fmt.Errorf("registry blob_url_scheme: %w", err)
			}
		}
		return r.ConnConfig.validate()
	case "oss":
		if b.OSS.Endpoint == "" || b.OSS.BucketName == "" {
			return errors.New("oss backend needs endpoint and bucket_name")
		}
		if err := checkScheme(b.OSS.Scheme); err != nil {
			return fmt.Errorf("oss: %w", err)
		}
		return b.OSS.ConnConfig.validate()
	case "s3":
		if b.S3.Region == "" || b.S3.BucketName == "" {
			return errors.New("s3 backend needs region and bucket_name")
		}
		if err := checkScheme(b.S3.Scheme); err != nil {
			return fmt.Errorf("s3: %w", err)
		}
		return b.S3.ConnConfig.validate()
	case "http-proxy":
		a := b.HTTPProxy.Addr
		switch {
		case strings.HasPrefix(a, "http://"), strings.HasPrefix(a, "https://"):
			if _, err := url.Parse(a); err != nil {
				return errors.New("http-proxy: addr is not a valid URL")
			}
		case a == "":
			return errors.New("http-proxy backend needs addr")
		case !filepath.IsAbs(a):
			return fmt.Errorf("http-proxy: addr %q is neither http(s):// nor an absolute unix socket path", short(a))
		default:
			st, err := os.Stat(a)
			if err != nil {
				return fmt.Errorf("http-proxy: unix socket %s: %w", a, errors.Unwrap(err))
			}
			if st.Mode().Type() != os.ModeSocket {
				return fmt.Errorf("http-proxy: %s is not a unix socket", a)
			}
		}
		return b.HTTPProxy.ConnConfig.validate()
	case "localdisk":
		return errors.New("backend type localdisk is not supported")
	case "":
		return errors.New("no backend type")
	}
	return fmt.Errorf("unknown backend type %q", short(b.Type))
}

func checkScheme(s string) error {
	if s != "http" && s != "https" {
		return fmt.Errorf("scheme %q, want http or https", short(s))
	}
	return nil
}

func (c *ConnConfig) validate() error {
	if c.Timeout < 0 || c.ConnectTimeout < 0 || c.RetryLimit < 0 {
		return errors.New("negative timeout, connect_timeout or retry_limit")
	}
	if c.Proxy.URL != "" {
		if u, err := url.Parse(c.Proxy.URL); err != nil || u.Host == "" {
			return errors.New("proxy: url is not a valid URL")
		}
	}
	for i, m := range c.Mirrors {
		if m.Host == "" {
			return fmt.Errorf("mirror %d: no host", i)
		}
	}
	return nil
}

// DecodeAuth decodes a registry auth string (base64 of "user:pass"). Its
// errors never quote the input.
func DecodeAuth(auth string) (user, pass string, err error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(auth))
	if err != nil {
		return "", "", errors.New("auth is not valid base64")
	}
	if !utf8.Valid(b) {
		return "", "", errors.New("auth is not UTF-8")
	}
	user, pass, ok := strings.Cut(string(b), ":")
	if !ok {
		return "", "", errors.New("auth is not user:password")
	}
	return user, pass, nil
}
