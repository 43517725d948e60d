package fusewire

import (
	"math/bits"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fsapi"
)

// iovMax is the most iovecs one preadv takes (IOV_MAX).
const iovMax = 1024

// seekable is go-fuse's fuse.ReadResultFd (fd, offset, size): read like a
// one-segment SegmentedResult.
type seekable interface {
	Seekable() (fd uintptr, off int64, sz int)
}

// readver is a fuse.ReadResult that can copy itself into a scatter list;
// go-fuse's fd and vector results are (fuse.ReadResultFd preadvs).
type readver interface {
	Readv(dst [][]byte) (int, fuse.Status)
}

// doRead offers the filesystem the guest's buffer (when the data part of
// the reply is one descriptor) and keeps the result for writeReply. A
// filesystem with ReadContext gets the request's context.
func doRead(r *request) {
	in := inStruct[fuse.ReadIn](r)
	r.readSize = int(in.Size)
	var res fuse.ReadResult
	var st fuse.Status
	if cr, ok := r.d.fs.(fsapi.ContextReader); ok {
		res, st = cr.ReadContext(r.ctx, in, r.dataBuffer(r.readSize, false))
	} else {
		res, st = r.d.fs.Read(r.cancel, in, r.dataBuffer(r.readSize, false))
	}
	if !st.Ok() {
		if res != nil {
			res.Done()
		}
		r.status = st
		return
	}
	if res == nil {
		res = fuse.ReadResultData(nil)
	}
	r.readResult = res
}

// readInto moves the read result into the guest's buffers after OutHeader
// and returns the byte count, which is short at end of file.
func (r *request) readInto() (int, fuse.Status) {
	r.iovs = subIov(r.iovs[:0], r.out, outHeaderSize, r.readSize)
	dst := r.iovs
	switch res := r.readResult.(type) {
	case SegmentedResult:
		return r.preadvSegments(dst, res.Segments())
	case seekable:
		if fd, off, sz := res.Seekable(); off >= 0 {
			seg := [1]Segment{{Fd: int(fd), Off: off, Len: sz}}
			return r.preadvSegments(dst, seg[:])
		}
	}
	switch res := r.readResult.(type) {
	case readver:
		// Readv takes one syscall; more buffers than IOV_MAX go
		// through Bytes below.
		if len(dst) <= iovMax {
			n, st := res.Readv(dst)
			return min(n, r.readSize), st
		}
	}
	var buf []byte
	if r.direct != nil {
		buf = r.direct
	} else {
		var p *[]byte
		buf, p = r.d.getBuffer(r.readSize)
		if p != nil {
			defer r.d.buffers.Put(p)
		}
	}
	data, st := r.readResult.Bytes(buf)
	if !st.Ok() {
		return 0, st
	}
	n := min(len(data), r.readSize)
	if n > 0 && !(len(r.direct) > 0 && &data[0] == &r.direct[0]) {
		n = scatter(dst, 0, data[:n])
	}
	return n, fuse.OK
}

// preadvSegments reads the segments in order into dst, which bounds the
// total. It stops at the first short segment (end of file) and returns the
// bytes read; an error after some bytes were read ends the reply there, as
// read(2) would.
func (r *request) preadvSegments(dst [][]byte, segs []Segment) (int, fuse.Status) {
	room := iovLen(dst)
	total := 0
	for _, s := range segs {
		if total == room {
			break
		}
		if s.Len < 0 || s.Off < 0 {
			return total, statusOrPartial(total, fuse.EINVAL)
		}
		want := min(s.Len, room-total)
		got := 0
		for got < want {
			iov := dst
			if total+got > 0 || want-got < room {
				r.segIovs = subIov(r.segIovs[:0], dst, total+got, want-got)
				iov = r.segIovs
			}
			n, err := r.preadv(s.Fd, iov[:min(len(iov), iovMax)], s.Off+int64(got))
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				return total + got, statusOrPartial(total+got, errno(err))
			}
			if n == 0 {
				break
			}
			got += n
		}
		total += got
		if got < want {
			break
		}
	}
	return total, fuse.OK
}

// preadv is unix.Preadv with the iovec array kept in the request, so that
// a READ allocates nothing.
func (r *request) preadv(fd int, iov [][]byte, off int64) (int, error) {
	r.iovecs = r.iovecs[:0]
	for _, b := range iov {
		if len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			r.iovecs = append(r.iovecs, v)
		}
	}
	if len(r.iovecs) == 0 {
		return 0, nil
	}
	// preadv(fd, iov, iovcnt, pos_l, pos_h): pos_h is 0 on 64-bit.
	hi := uintptr(uint64(off) >> (bits.UintSize - 1) >> 1)
	n, _, e := unix.Syscall6(unix.SYS_PREADV, uintptr(fd), uintptr(unsafe.Pointer(&r.iovecs[0])),
		uintptr(len(r.iovecs)), uintptr(off), hi, 0)
	runtime.KeepAlive(iov)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func statusOrPartial(n int, st fuse.Status) fuse.Status {
	if n > 0 {
		return fuse.OK
	}
	return st
}
