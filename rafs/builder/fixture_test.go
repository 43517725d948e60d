package builder

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const fixtureDir = "../testdata/fixtures"

// TestLayoutMatchesNydus rebuilds the nydus 2.2 fixture's tree (its two files
// are recovered from the fixture blob) with the same options and compares the
// bootstrap and blob layout with nydus-image's output field by field. Only
// values that depend on the zstd encoder's output (compressed offsets and
// sizes, blob id) and the device slot's mapped_blkaddr (nydus 2.2 aligned it
// to 2 MiB, current nydus to 512 KiB, which we follow) may differ.
func TestLayoutMatchesNydus(t *testing.T) {
	dir := filepath.Join(fixtureDir, "nydus/v6-2.2")
	blob, err := os.ReadFile(filepath.Join(dir, "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"))
	if err != nil {
		t.Fatalf("fixture missing: %v", err)
	}
	ref, err := os.ReadFile(filepath.Join(dir, "rafs-v6-2.2.boot"))
	if err != nil {
		t.Fatalf("fixture missing: %v", err)
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name              string
		coff, csize, size int
		sec, nsec         int64
	}{
		{"lib.rs", 0, 4828, 16931, 1676819553, 628661334},
		{"sync_io.rs", 4828, 2974, 13400, 1676819553, 628993084},
	} {
		data, err := decompress(CompressZstd, blob[f.coff:f.coff+f.csize], f.size)
		if err != nil || len(data) != f.size {
			t.Fatalf("%s: decompress: %v", f.name, err)
		}
		p := filepath.Join(src, f.name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, time.Unix(f.sec, f.nsec), time.Unix(f.sec, f.nsec)); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(src, 0o755)
	os.Chtimes(src, time.Unix(0, 0), time.Unix(0, 0))
	out := t.TempDir()
	res, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, Options{Compressor: CompressZstd})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(res.BootstrapPath)
	ourBlob, _ := os.ReadFile(res.BlobPath)
	if sum := sha256.Sum256(ourBlob); res.BlobSHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("Result.BlobSHA256 %s, the blob file's sha256 %x", res.BlobSHA256, sum)
	}
	if len(got) != len(ref) {
		t.Errorf("bootstrap size %d, nydus %d", len(got), len(ref))
	}
	le := binary.LittleEndian
	type field struct {
		name      string
		off, size int
	}
	same := func(what string, a, b []byte, fields []field) {
		t.Helper()
		for _, f := range fields {
			x, y := a[f.off:f.off+f.size], b[f.off:f.off+f.size]
			if string(x) != string(y) {
				t.Errorf("%s %s: ours %x, nydus %x", what, f.name, x, y)
			}
		}
	}
	// superblock, extended superblock
	same("sb", got[1024:], ref[1024:], []field{{"magic", 0, 4}, {"checksum", 4, 4}, {"compat", 8, 4},
		{"blkszbits", 12, 1}, {"extslots", 13, 1}, {"root_nid", 14, 2}, {"inos", 16, 8}, {"build_time", 24, 12},
		{"blocks", 36, 4}, {"meta_blkaddr", 40, 4}, {"xattr_blkaddr", 44, 4}, {"incompat", 80, 4},
		{"u1", 84, 2}, {"extra_devices", 86, 2}, {"devt_slotoff", 88, 2}, {"reserved", 90, 38}})
	same("ext sb", got[1152:], ref[1152:], []field{{"flags", 0, 8}, {"blob table", 8, 12}, {"chunk size", 20, 4},
		{"chunk table", 24, 16}, {"prefetch", 40, 12}, {"reserved", 52, 204}})
	same("device slot", got[1408:], ref[1408:], []field{{"blocks", 64, 4}, {"reserved", 72, 56}})
	// blob table entry (fields that do not depend on the zstd output)
	same("blob entry", got[0x1000:], ref[0x1000:], []field{{"index", 64, 4}, {"chunk size", 68, 4},
		{"chunk count", 72, 4}, {"compressor", 76, 4}, {"digester", 80, 4}, {"features", 84, 4},
		{"uncompressed size", 96, 8}, {"toc size", 104, 4}, {"ci compressor", 108, 4},
		{"ci sizes", 120, 16}, {"reserved", 168, 88}})
	if ci := le.Uint64(got[0x1000+112:]); ci != le.Uint64(ourBlob[len(ourBlob)-int(le.Uint32(got[0x1000+104:]))+128+56:]) {
		t.Errorf("blob entry ci_offset %d does not match our ToC", ci)
	}
	// inodes: every byte, as nids and layout must agree
	meta := 2 * 4096
	for _, nid := range []int{128, 133, 136} {
		o := meta + nid*32
		same("inode", got[o:], ref[o:], []field{{"format", 0, 2}, {"xattr count", 2, 2}, {"mode", 4, 2},
			{"size", 8, 8}, {"i_u", 16, 4}, {"uid/gid", 24, 8}, {"mtime", 32, 12}, {"nlink", 44, 4}})
	}
	same("root dirents", got[meta+128*32+64:], ref[meta+128*32+64:], []field{{"dirents", 0, 67}})
	same("chunk indexes", got[meta+133*32+64:], ref[meta+133*32+64:], []field{{"lib.rs", 0, 8}})
	same("chunk indexes", got[meta+136*32+64:], ref[meta+136*32+64:], []field{{"sync_io.rs", 0, 8}})
	// chunk table: digest, blob index, flags, usize, uoff, file offset, index
	for i := 0; i < 2; i++ {
		o := 0x4000 + 80*i
		same("chunk table", got[o:], ref[o:], []field{{"digest", 0, 32}, {"blob", 32, 8},
			{"usize", 44, 4}, {"uoff", 56, 8}, {"file offset", 64, 8}, {"index", 72, 8}})
	}
	// blobs: both must satisfy the same ToC, tar-header and blob-id rules,
	// with the same sections in the same order.
	refTOC := checkNativeBlob(t, "nydus blob", blob, "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef")
	ourTOC := checkNativeBlob(t, "our blob", ourBlob, res.BlobID)
	if len(refTOC) != len(ourTOC) {
		t.Fatalf("ToC entries: ours %v, nydus %v", ourTOC, refTOC)
	}
	for i := range refTOC {
		r, o := refTOC[i], ourTOC[i]
		// offsets and the ci array (which holds compressed offsets) depend on
		// the zstd encoder; the chunk digests must not
		if r.name != o.name || r.flags != o.flags || (r.name != "image.blob" && (r.csize != o.csize || r.usize != o.usize)) ||
			(r.name == "blob.digest" && r.digest != o.digest) {
			t.Errorf("ToC entry %d: ours %+v, nydus %+v", i, o, r)
		}
	}
}

type tocEntry struct {
	name              string
	flags             uint32
	digest            [32]byte
	off, csize, usize uint64
}

// checkNativeBlob checks a native v6 blob: ToC at the end with its tar
// header, every section's digest and trailing tar header, and the blob id.
func checkNativeBlob(t *testing.T, what string, b []byte, id string) []tocEntry {
	t.Helper()
	le := binary.LittleEndian
	if len(b) < 512 || string(b[len(b)-512:len(b)-512+13]) != "rafs.blob.toc" {
		t.Fatalf("%s: no rafs.blob.toc tar header at the end", what)
	}
	hdr := b[len(b)-512:]
	size := parseOctal(hdr[124:136])
	if string(hdr[257:265]) != "ustar  \x00" {
		t.Errorf("%s: ToC tar magic %q", what, hdr[257:265])
	}
	toc := b[len(b)-512-int(size) : len(b)-512]
	var out []tocEntry
	var digestArray [2]uint64
	for i := 0; i+128 <= len(toc); i += 128 {
		e := toc[i : i+128]
		te := tocEntry{flags: le.Uint32(e[0:]), off: le.Uint64(e[56:]), csize: le.Uint64(e[64:]), usize: le.Uint64(e[72:])}
		n := 0
		for n < 16 && e[8+n] != 0 {
			n++
		}
		te.name = string(e[8 : 8+n])
		copy(te.digest[:], e[24:56])
		out = append(out, te)
		switch te.name {
		case "image.blob":
			// 2.2 wrote the data end here; the data always starts at 0
			end := te.csize
			if sha256.Sum256(b[:end+512]) != te.digest {
				t.Errorf("%s: image.blob digest mismatch", what)
			}
			checkTarHeader(t, what, b[end:end+512], "image.blob", te.csize)
		case "blob.meta.header":
			if sha256.Sum256(b[te.off:te.off+te.csize]) != te.digest {
				t.Errorf("%s: %s digest mismatch", what, te.name)
			}
			if le.Uint32(b[te.off:]) != blobMetaMagic || le.Uint32(b[te.off+4092:]) != blobMetaMagic {
				t.Errorf("%s: blob.meta header magic", what)
			}
		default:
			content := b[te.off : te.off+te.csize]
			if te.flags == tocFlagZstd {
				var err error
				if content, err = decompress(CompressZstd, content, int(te.usize)); err != nil || uint64(len(content)) != te.usize {
					t.Errorf("%s: %s: zstd: %v", what, te.name, err)
				}
			}
			if sha256.Sum256(content) != te.digest {
				t.Errorf("%s: %s digest mismatch", what, te.name)
			}
			end := te.off + te.csize
			if te.name == "blob.meta" {
				end += blobMetaHdrSize
			}
			checkTarHeader(t, what, b[end:end+512], te.name, end-te.off)
			if te.name == "blob.digest" {
				digestArray = [2]uint64{te.off, end}
			}
		}
	}
	h := sha256.New()
	h.Write(b[:digestArray[0]])
	h.Write(b[digestArray[1]:])
	if got := hex.EncodeToString(h.Sum(nil)); got != id {
		t.Errorf("%s: blob id %s, want %s", what, got, id)
	}
	return out
}

func checkTarHeader(t *testing.T, what string, h []byte, name string, size uint64) {
	t.Helper()
	if n := string(h[:len(name)]); n != name || h[len(name)] != 0 {
		t.Errorf("%s: tar header name %q, want %q", what, h[:16], name)
	}
	if got := parseOctal(h[124:136]); got != size {
		t.Errorf("%s: %s tar size %d, want %d", what, name, got, size)
	}
	var sum uint64
	for i, c := range h {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += uint64(c)
	}
	if got := parseOctal(h[148:156]); got != sum {
		t.Errorf("%s: %s tar checksum %o, want %o", what, name, got, sum)
	}
}

func parseOctal(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		if c < '0' || c > '7' {
			break
		}
		v = v*8 + uint64(c-'0')
	}
	return v
}
