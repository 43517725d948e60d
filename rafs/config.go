package rafs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/pelletier/go-toml/v2"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// Config is the part of a nydusd configuration file (v1 "RafsConfig" JSON,
// v2 JSON or v2 TOML) that serving an image needs.
type Config struct {
	Version        int
	BackendType    string
	LocalFS        backend.LocalFS
	DigestValidate bool
	EnableXattr    bool
}

type localfsJSON struct {
	Dir      string   `json:"dir" toml:"dir"`
	BlobFile string   `json:"blob_file" toml:"blob_file"`
	AltDirs  []string `json:"alt_dirs" toml:"alt_dirs"`
}

type configV1 struct {
	Device struct {
		Backend struct {
			Type   string          `json:"type"`
			Config json.RawMessage `json:"config"`
		} `json:"backend"`
		Cache struct {
			Validate bool `json:"validate"`
		} `json:"cache"`
	} `json:"device"`
	DigestValidate bool `json:"digest_validate"`
	EnableXattr    bool `json:"enable_xattr"`
}

type configV2 struct {
	Version int `json:"version" toml:"version"`
	Backend struct {
		Type    string       `json:"type" toml:"type"`
		LocalFS *localfsJSON `json:"localfs" toml:"localfs"`
	} `json:"backend" toml:"backend"`
	Cache struct {
		Validate bool `json:"validate" toml:"validate"`
	} `json:"cache" toml:"cache"`
	Rafs struct {
		Validate    bool `json:"validate" toml:"validate"`
		EnableXattr bool `json:"enable_xattr" toml:"enable_xattr"`
	} `json:"rafs" toml:"rafs"`
}

const maxConfigSize = 1 << 20

// LoadConfig reads a nydusd configuration file (at most 1 MiB).
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes a nydusd configuration: v2 JSON, v2 TOML or v1
// JSON, as nydusd tries them.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("%d bytes is larger than 1 MiB", len(data))
	}
	c := &Config{}
	var probe struct {
		Version int `json:"version"`
	}
	isJSON := false
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		if err := json.Unmarshal(data, &probe); err != nil {
			return nil, fmt.Errorf("json: %w", err)
		}
		isJSON = true
	}
	if !isJSON || probe.Version == 2 {
		var v configV2
		if isJSON {
			if err := json.Unmarshal(data, &v); err != nil {
				return nil, fmt.Errorf("v2 json: %w", err)
			}
		} else {
			if err := toml.Unmarshal(data, &v); err != nil {
				return nil, fmt.Errorf("neither JSON nor v2 TOML: %w", err)
			}
			if v.Version != 2 {
				return nil, fmt.Errorf("toml config: version %d, want 2", v.Version)
			}
		}
		c.Version, c.BackendType = 2, v.Backend.Type
		c.DigestValidate = v.Rafs.Validate || v.Cache.Validate
		c.EnableXattr = v.Rafs.EnableXattr
		if v.Backend.LocalFS != nil {
			c.LocalFS = backend.LocalFS{Dir: v.Backend.LocalFS.Dir, BlobFile: v.Backend.LocalFS.BlobFile, AltDirs: v.Backend.LocalFS.AltDirs}
		}
	} else if probe.Version != 0 && probe.Version != 1 {
		return nil, fmt.Errorf("unknown config version %d", probe.Version)
	} else {
		var v configV1
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("v1 json: %w", err)
		}
		c.Version, c.BackendType = 1, v.Device.Backend.Type
		c.DigestValidate = v.DigestValidate || v.Device.Cache.Validate
		c.EnableXattr = v.EnableXattr
		if c.BackendType == "localfs" && len(v.Device.Backend.Config) > 0 {
			var l localfsJSON
			if err := json.Unmarshal(v.Device.Backend.Config, &l); err != nil {
				return nil, fmt.Errorf("v1 localfs config: %w", err)
			}
			c.LocalFS = backend.LocalFS{Dir: l.Dir, BlobFile: l.BlobFile, AltDirs: l.AltDirs}
		}
	}
	switch c.BackendType {
	case "localfs":
		if c.LocalFS.Dir == "" && c.LocalFS.BlobFile == "" {
			return nil, fmt.Errorf("localfs backend needs dir or blob_file")
		}
	case "":
		return nil, fmt.Errorf("no backend type")
	default:
		return nil, fmt.Errorf("backend type %q is not supported yet (only localfs)", c.BackendType)
	}
	return c, nil
}

// Backend returns the configured blob backend.
func (c *Config) Backend() backend.Backend {
	l := c.LocalFS
	return &l
}
