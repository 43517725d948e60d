package storage

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzChunkMap opens arbitrary bytes as a chunk map (a cache directory is
// not trusted): it must be refused or used without a crash, and a refused
// file must leave nothing marked.
func FuzzChunkMap(f *testing.F) {
	good := make([]byte, chunkMapSize(20))
	binary.LittleEndian.PutUint32(good[0:], chunkMapMagic)
	binary.LittleEndian.PutUint32(good[4:], chunkMapVersion)
	binary.LittleEndian.PutUint32(good[8:], chunkMapMagic2)
	good[4096] = 0xa5
	f.Add(good, uint32(20))
	f.Add(good[:4096], uint32(0))
	f.Add([]byte{}, uint32(7))
	f.Fuzz(func(t *testing.T, data []byte, count uint32) {
		count %= 1 << 16
		p := filepath.Join(t.TempDir(), "x.blob.data.chunk_map")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		m, created, err := openChunkMap(p, count)
		if err != nil {
			return
		}
		defer m.close()
		if created || int64(len(data)) != chunkMapSize(count) {
			t.Fatalf("accepted a %d-byte map for %d chunks", len(data), count)
		}
		for i := uint32(0); i < count+8; i++ {
			want := i < count && data[4096+i/8]&(0x80>>(i%8)) != 0
			if m.isSet(i) != want {
				t.Fatalf("chunk %d: isSet %v, byte says %v", i, m.isSet(i), want)
			}
		}
		if count > 0 {
			m.set(count - 1)
			if !m.isSet(count - 1) {
				t.Fatal("set did not stick")
			}
		}
	})
}
