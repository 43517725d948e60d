package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The chunk_map file of nydusd's filecache.
const (
	chunkMapHeaderSize = 4096
	chunkMapMagic      = 0x424D4150
	chunkMapVersion    = 1
	chunkMapMagic2     = 0x434D4150
	chunkMapAllReady   = 0x4D4D4150
)

// errBadChunkMap marks a chunk map that must not be trusted.
var errBadChunkMap = errors.New("chunk map not usable")

// chunkMapSize is the size of the chunk map file for n chunks.
func chunkMapSize(n uint32) int64 { return chunkMapHeaderSize + (int64(n)+7)/8 }

// chunkMap is a mapped chunk_map file. Bits are set with atomic ORs on
// aligned 32-bit words, so that other processes mapping the file (nydusd
// does, with byte CAS) see consistent bytes.
type chunkMap struct {
	f     *os.File
	mem   []byte
	count uint32
}

// openChunkMap opens (or creates) the chunk map at path for count chunks.
// An existing file of the wrong size or with an unknown header is
// errBadChunkMap; created reports a new file.
func openChunkMap(path string, count uint32) (m *chunkMap, created bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		created = true
	}
	if err != nil {
		return nil, false, err
	}
	fail := func(err error) (*chunkMap, bool, error) {
		f.Close()
		return nil, false, err
	}
	size := chunkMapSize(count)
	if created {
		if err := f.Truncate(size); err != nil {
			return fail(err)
		}
		var h [16]byte
		binary.LittleEndian.PutUint32(h[0:], chunkMapMagic)
		binary.LittleEndian.PutUint32(h[4:], chunkMapVersion)
		binary.LittleEndian.PutUint32(h[8:], chunkMapMagic2)
		if _, err := f.WriteAt(h[:], 0); err != nil {
			return fail(err)
		}
	} else {
		st, err := f.Stat()
		if err != nil {
			return fail(err)
		}
		if st.Size() != size {
			return fail(fmt.Errorf("%w: %s is %d bytes, want %d for %d chunks", errBadChunkMap, path, st.Size(), size, count))
		}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(err)
	}
	m = &chunkMap{f: f, mem: mem, count: count}
	if err := m.checkHeader(); err != nil {
		m.close()
		return nil, false, fmt.Errorf("%w: %s: %v", errBadChunkMap, path, err)
	}
	return m, created, nil
}

func (m *chunkMap) checkHeader() error {
	h := m.mem
	if binary.LittleEndian.Uint32(h[0:]) != chunkMapMagic || binary.LittleEndian.Uint32(h[8:]) != chunkMapMagic2 {
		return errors.New("bad magic")
	}
	if v := binary.LittleEndian.Uint32(h[4:]); v != chunkMapVersion {
		return fmt.Errorf("version %d", v)
	}
	if a := binary.LittleEndian.Uint32(h[12:]); a != 0 && a != chunkMapAllReady {
		return fmt.Errorf("all_ready field %#x", a)
	}
	return nil
}

// word returns the aligned 32-bit word holding chunk i's bit and the
// mask. The mapping covers whole pages, so the last word is mapped even
// where it passes the end of the file (bytes past the end are never
// written back).
func (m *chunkMap) word(i uint32) (*uint32, uint32) {
	byteOff := chunkMapHeaderSize + int(i/8)
	// The file is little endian by bytes: byte k of the word holds bits
	// 8k..8k+7, and chunk i's bit is 0x80 >> (i % 8) of its byte.
	shift := uint(8*(byteOff&3)) + uint(7-i%8)
	return (*uint32)(unsafe.Add(unsafe.Pointer(&m.mem[0]), byteOff&^3)), 1 << shift
}

// allReady reports whether the header says every chunk is there.
func (m *chunkMap) allReady() bool {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&m.mem[12]))) == chunkMapAllReady
}

// isSet reports chunk i's bit.
func (m *chunkMap) isSet(i uint32) bool {
	if i >= m.count {
		return false
	}
	w, mask := m.word(i)
	return atomic.LoadUint32(w)&mask != 0
}

// set marks chunk i.
func (m *chunkMap) set(i uint32) {
	if i >= m.count {
		return
	}
	w, mask := m.word(i)
	atomic.OrUint32(w, mask)
}

// setAllReady writes the all_ready magic.
func (m *chunkMap) setAllReady() {
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&m.mem[12])), chunkMapAllReady)
}

func (m *chunkMap) close() error {
	err := unix.Munmap(m.mem)
	return errors.Join(err, m.f.Close())
}
