package convert

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// ParseBackend reads nydusify's --backend-type and --backend-config: the
// JSON object is the daemon's backend table of that type (s3 and oss:
// endpoint, scheme, bucket_name, region, object_prefix, access_key_id,
// access_key_secret; localfs: dir). The registry type (or "") means the
// blobs go to the target repository, and the result is nil.
func ParseBackend(typ string, config []byte) (*backend.BackendConfig, error) {
	switch typ {
	case "", "registry":
		if len(bytes.TrimSpace(config)) > 0 {
			return nil, fmt.Errorf("--backend-config is only for --backend-type s3, oss or localfs")
		}
		return nil, nil
	case "s3", "oss", "localfs":
	default:
		return nil, fmt.Errorf("--backend-type %q: want registry, s3, oss or localfs", typ)
	}
	if len(bytes.TrimSpace(config)) == 0 {
		return nil, fmt.Errorf("--backend-type %s needs --backend-config or --backend-config-file", typ)
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(config, &probe); err != nil {
		return nil, fmt.Errorf("--backend-config: not a JSON object: %w", err)
	}
	// Decode it as the backend table of a daemon config, which brings the
	// daemon's defaults (https, timeouts) and validation.
	doc, _ := json.Marshal(map[string]any{"version": 2,
		"backend": map[string]json.RawMessage{"type": json.RawMessage(`"` + typ + `"`), typ: config}})
	c, err := backend.ParseConfig(doc)
	if err != nil {
		return nil, fmt.Errorf("--backend-config: %w", err)
	}
	return &c.Backend, nil
}

// blobStore is where a conversion with a storage backend puts the layer
// blobs (the manifest then holds only the bootstrap layer).
type blobStore struct {
	up backend.Uploader
}

func newBlobStore(c *backend.BackendConfig) (*blobStore, error) {
	up, err := backend.NewUploader(c, backend.Options{})
	if err != nil {
		return nil, err
	}
	return &blobStore{up: up}, nil
}

// put stores a layer's blob under its id (the sha256 hex the bootstrap's
// blob table names) unless it is there; it reports whether bytes were sent.
func (s *blobStore) put(ctx context.Context, f *fileBlob) (bool, error) {
	if ok, err := s.up.Has(ctx, f.digest.Hex, f.size); err != nil || ok {
		return false, err
	}
	r, err := os.Open(f.path)
	if err != nil {
		return false, err
	}
	defer r.Close()
	return true, s.up.Upload(ctx, f.digest.Hex, r, f.size)
}
