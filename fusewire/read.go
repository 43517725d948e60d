package fusewire

import (
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fsapi"
)

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

// iovMax is the most buffers one Readv takes (IOV_MAX).
const iovMax = 1024

// doRead serves READ from start to end: it offers the filesystem the
// guest's buffer (when the data part of the reply is one descriptor), then
// moves the result into the guest's buffers after OutHeader, file segments
// with preadv straight from the host file. The reply data is then in
// place; writeReply only adds the header.
func doRead(r *request) {
	in := inStruct[fuse.ReadIn](r)
	size := int(in.Size)
	var res fuse.ReadResult
	var st fuse.Status
	if cr, ok := r.d.fs.(fsapi.ContextReader); ok {
		res, st = cr.ReadContext(r.ctx, in, r.dataBuffer(size, false))
	} else {
		res, st = r.d.fs.Read(r.cancel, in, r.dataBuffer(size, false))
	}
	if res != nil {
		// Also when copying faults (a truncated file under its mmap): the
		// result's fds and references go back either way.
		defer res.Done()
	}
	if !st.Ok() {
		r.status = st
		return
	}
	w := r.out
	w.Skip(outHeaderSize)
	r.data.Assign(w.Split(size))
	r.dataLen, r.status = r.copyResult(res)
}

// copyResult writes res into r.data and returns the byte count, which is
// short at end of file.
func (r *request) copyResult(res fuse.ReadResult) (int, fuse.Status) {
	var seg [1]fsapi.Segment
	var segs []fsapi.Segment
	switch res := res.(type) {
	case nil:
		return 0, fuse.OK
	case fsapi.SegmentedResult:
		segs = res.Segments()
	case seekable:
		if fd, off, sz := res.Seekable(); off >= 0 {
			seg[0] = fsapi.Segment{Fd: int(fd), Off: off, Len: sz}
			segs = seg[:]
		}
	}
	if segs != nil {
		n, err := fsapi.FillSegments(&r.data, segs)
		if err != nil && n == 0 {
			return 0, errno(err)
		}
		return n, fuse.OK
	}
	room := r.data.Len()
	if rv, ok := res.(readver); ok {
		// Readv takes one syscall; more buffers than IOV_MAX go
		// through Bytes below.
		r.iovs = r.data.Buffers(r.iovs[:0])
		if len(r.iovs) <= iovMax {
			n, st := rv.Readv(r.iovs)
			return min(n, room), st
		}
	}
	buf := r.direct
	if buf == nil {
		var p *[]byte
		buf, p = r.d.getBuffer(room)
		if p != nil {
			defer r.d.buffers.Put(p)
		}
	}
	data, st := res.Bytes(buf)
	if !st.Ok() {
		return 0, st
	}
	n := min(len(data), room)
	if n > 0 && !(len(r.direct) > 0 && &data[0] == &r.direct[0]) {
		n = r.data.CopyIn(data[:n])
	}
	return n, fuse.OK
}
