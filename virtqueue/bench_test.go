package virtqueue

import (
	"encoding/binary"
	"testing"
)

// BenchmarkPopIndirect pops the chain a Linux guest sends for a 1 MiB
// FUSE READ: an indirect table of 258 descriptors (request, out header,
// 256 pages of 4 KiB), the pages either contiguous in guest RAM or
// scattered (every other page, so no two are adjacent).
func BenchmarkPopIndirect(b *testing.B) {
	for _, tc := range []struct {
		name   string
		stride uint64
	}{{"pages=contiguous", 4096}, {"pages=scattered", 8192}} {
		b.Run(tc.name, func(b *testing.B) {
			const (
				base  = 0x100000
				size  = 4 << 20
				qsize = 1024
				desc  = base
				avail = base + 16*qsize
				used  = avail + 6 + 2*qsize + 2
				table = base + 0x10000
				data  = base + 0x20000
			)
			ram := make([]byte, size)
			m, err := NewMemoryFromBytes([]uint64{base}, [][]byte{ram})
			if err != nil {
				b.Fatal(err)
			}
			at := func(gpa uint64) []byte { return ram[gpa-base:] }
			s := m.Acquire()
			defer s.Release()
			q, err := NewQueue(s, Config{Size: qsize, Desc: desc, Avail: avail, Used: used})
			if err != nil {
				b.Fatal(err)
			}
			tab := at(table)
			putDesc(tab, 0, data, 80, DescFlagNext, 1)
			putDesc(tab, 1, data+128, 16, DescFlagNext|DescFlagWrite, 2)
			for i := 0; i < 256; i++ {
				flags := uint16(DescFlagWrite)
				if i < 255 {
					flags |= DescFlagNext
				}
				putDesc(tab, 2+i, data+4096+uint64(i)*tc.stride, 4096, flags, uint16(3+i))
			}
			putDesc(at(desc), 0, table, 16*258, DescFlagIndirect, 0)
			var c Chain
			idx := uint16(0)
			for b.Loop() {
				idx++
				binary.LittleEndian.PutUint16(at(avail)[2:], idx)
				if ok, err := q.Pop(s, &c); !ok || err != nil {
					b.Fatal(ok, err)
				}
				if c.WritableLen() != 16+1<<20 {
					b.Fatal(c.WritableLen())
				}
			}
		})
	}
}
