package convert

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// source is an opened source image: one image or an index of them.
type source struct {
	ref      string           // as the user named it
	repo     *name.Repository // registry sources
	desc     v1.Descriptor    // the top-level manifest or index
	img      v1.Image         // a single image, or
	idx      v1.ImageIndex    // an index
	fromTar  bool             // docker save archive: layers are uncompressed on disk
	isDocker bool             // Docker (not OCI) media types
}

// platformImage is one image to convert, with its index entry when it came
// from an index.
type platformImage struct {
	img      v1.Image
	desc     v1.Descriptor // the image manifest's descriptor
	platform *v1.Platform
}

func openSource(ctx context.Context, o *Options) (*source, error) {
	s := &source{ref: o.Source}
	switch {
	case o.SourceArchive:
		img, err := tarball.ImageFromPath(o.Source, nil)
		if err != nil {
			return nil, fmt.Errorf("source archive %s: %w", o.Source, err)
		}
		s.img, s.fromTar = img, true
	case o.SourceLayout:
		p, err := layout.FromPath(o.Source)
		if err != nil {
			return nil, fmt.Errorf("source layout %s: %w", o.Source, err)
		}
		idx, err := p.ImageIndex()
		if err != nil {
			return nil, fmt.Errorf("source layout %s: %w", o.Source, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("source layout %s: %w", o.Source, err)
		}
		s.idx = idx
		// index.json naming one image or index: that is the source.
		if len(im.Manifests) == 1 {
			d := im.Manifests[0]
			s.desc = d
			switch {
			case d.MediaType.IsImage():
				if s.img, err = idx.Image(d.Digest); err != nil {
					return nil, fmt.Errorf("source layout %s: %w", o.Source, err)
				}
				s.idx = nil
			case d.MediaType.IsIndex():
				if s.idx, err = idx.ImageIndex(d.Digest); err != nil {
					return nil, fmt.Errorf("source layout %s: %w", o.Source, err)
				}
			}
		}
	default:
		ref, err := name.ParseReference(o.Source, nameOptions(o.SourceInsecure || o.PlainHTTP)...)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", o.Source, err)
		}
		repo := ref.Context()
		s.repo = &repo
		d, err := remote.Get(ref, append(o.remoteOptions(o.SourceInsecure), remote.WithContext(ctx))...)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", o.Source, err)
		}
		s.desc = d.Descriptor
		switch {
		case d.MediaType.IsIndex():
			if s.idx, err = d.ImageIndex(); err != nil {
				return nil, fmt.Errorf("source %s: %w", o.Source, err)
			}
		case d.MediaType.IsImage():
			if s.img, err = d.Image(); err != nil {
				return nil, fmt.Errorf("source %s: %w", o.Source, err)
			}
		default:
			return nil, fmt.Errorf("source %s: unsupported manifest media type %s", o.Source, d.MediaType)
		}
	}
	if s.img != nil && s.desc.Digest == (v1.Hash{}) {
		if err := s.describeImage(); err != nil {
			return nil, err
		}
	}
	s.isDocker = s.desc.MediaType == types.DockerManifestSchema2 || s.desc.MediaType == types.DockerManifestList
	return s, nil
}

func (s *source) describeImage() error {
	d, err := s.img.Digest()
	if err != nil {
		return fmt.Errorf("source %s: %w", s.ref, err)
	}
	sz, err := s.img.Size()
	if err != nil {
		return fmt.Errorf("source %s: %w", s.ref, err)
	}
	mt, err := s.img.MediaType()
	if err != nil {
		return fmt.Errorf("source %s: %w", s.ref, err)
	}
	s.desc = v1.Descriptor{MediaType: mt, Digest: d, Size: sz}
	return nil
}

// images picks the images to convert: the one image, or from an index the
// one matching the platform, or every platform's.
func (s *source) images(o *Options) ([]platformImage, error) {
	if s.img != nil {
		return []platformImage{{img: s.img, desc: s.desc}}, nil
	}
	im, err := s.idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("source %s: index: %w", s.ref, err)
	}
	want, err := v1.ParsePlatform(o.Platform)
	if err != nil {
		return nil, fmt.Errorf("--platform %q: %w", o.Platform, err)
	}
	var out []platformImage
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			continue // nested indexes and artifacts are not converted
		}
		if d.Platform != nil && d.Platform.OS == "unknown" {
			continue // attestations
		}
		if !o.AllPlatforms && (d.Platform == nil || !d.Platform.Satisfies(*want)) {
			continue
		}
		img, err := s.idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("source %s: manifest %s: %w", s.ref, d.Digest, err)
		}
		out = append(out, platformImage{img: img, desc: d, platform: d.Platform})
		if !o.AllPlatforms {
			break
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("source %s: no image for platform %s in the index (use --platform or --all-platforms)", s.ref, o.Platform)
	}
	return out, nil
}
