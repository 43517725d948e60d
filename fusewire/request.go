package fusewire

import (
	"bytes"
	"context"
	"fmt"
	"runtime/debug"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// request is one FUSE request in flight. Requests are pooled; reset
// prepares one for a chain and release drops every reference to guest
// memory.
type request struct {
	d      *Device
	ctx    context.Context
	cancel <-chan struct{}
	id     uint64
	queue  int
	sess   *Session

	// The chain: a reader over the request bytes (advanced as the request
	// is parsed) and a writer over the room for the reply (kept at its
	// start; replies write through copies of it).
	in, out virtqueue.Cursor
	room    int

	op *opHandler
	// inBuf holds InHeader and the op struct, copied out of guest memory
	// and zero-filled past what the guest sent. It is 8-byte aligned.
	inBuf [inBufSize / 8]uint64
	// payload is the rest of the request, still in guest memory, with any
	// request extension cut off.
	payload      [][]byte
	payloadLen   int
	payloadStore [4][]byte

	// Reply: the struct (a view of outBuf), then flat data (outPayload) or
	// a read result.
	outBuf     [outBufSize / 8]uint64
	outData    []byte
	outPayload []byte
	// data is the reply's data part once READ has put its bytes there
	// (dataLen of them), straight from the filesystem's result.
	data    virtqueue.Cursor
	dataLen int
	status  fuse.Status
	// logged is set once the request has been logged, to log it once.
	logged bool
	obs    observation // Options.Observer's bookkeeping

	// direct is the guest slice offered to the filesystem as its data
	// buffer; pooled is a scratch buffer to give back.
	direct []byte
	pooled *[]byte
	// iovs is scratch space for a scatter list, kept across requests (as
	// is the cursors' iovec space).
	iovs [][]byte
}

func (r *request) reset(d *Device, ctx context.Context, queue int, in, out [][]byte) {
	*r = request{d: d, ctx: ctx, cancel: ctx.Done(), queue: queue,
		in: r.in, out: r.out, data: r.data, iovs: r.iovs}
	r.in.Reset(in)
	r.out.Reset(out)
	r.id = d.nextID.Add(1)
	r.sess = d.session.Load()
}

func (r *request) release() {
	if r.pooled != nil {
		r.d.buffers.Put(r.pooled)
	}
	clear(r.iovs[:cap(r.iovs)])
	r.in.Clear()
	r.out.Clear()
	r.data.Clear()
	*r = request{in: r.in, out: r.out, data: r.data, iovs: r.iovs[:0]}
}

func (r *request) inBytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&r.inBuf[0])), inBufSize)
}

func (r *request) outBytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&r.outBuf[0])), outBufSize)
}

func (r *request) header() *fuse.InHeader {
	return (*fuse.InHeader)(unsafe.Pointer(&r.inBuf[0]))
}

// inStruct returns the op struct, header included, as a pointer to T.
func inStruct[T any](r *request) *T {
	return (*T)(unsafe.Pointer(&r.inBuf[0]))
}

// outStruct returns the reply struct as a pointer to T.
func outStruct[T any](r *request) *T {
	return (*T)(unsafe.Pointer(&r.outBuf[0]))
}

// serve frames, dispatches and answers the request; it returns the number
// of bytes written into r.out.
func (r *request) serve() (n int) {
	total := r.in.Len()
	if !virtqueue.ReadObj(&r.in, (*fuse.InHeader)(unsafe.Pointer(&r.inBuf[0]))) {
		r.violation(fmt.Sprintf("request of %d bytes is shorter than the FUSE header", total))
		return 0
	}
	if o := r.d.opts.Observer; o != nil {
		r.begin(o)
		defer r.end(o, &n)
	}
	h := r.header()
	if h.Opcode < opCount {
		r.op = &opTable[h.Opcode]
	}
	r.room = r.out.Len()
	st := r.parse(total)
	if r.op != nil && r.op.noReply {
		if st.Ok() {
			r.call()
		} else {
			r.violation(fmt.Sprintf("dropped: %v", st))
		}
		return 0
	}
	if r.room < outHeaderSize {
		r.violation(fmt.Sprintf("no room for a reply (%d writable bytes)", r.room))
		return 0
	}
	if !st.Ok() {
		r.status = st
		if st != fuse.ENOSYS {
			r.violation(fmt.Sprintf("rejected: %v", st))
		}
		return r.writeReply()
	}
	r.call()
	n = r.writeReply()
	if r.header().Opcode == OpDestroy && r.status.Ok() && r.d.opts.OnDestroy != nil {
		r.d.opts.OnDestroy()
	}
	return n
}

// parse checks the request against its opcode and the reply room, copies
// the op struct out and locates the payload.
func (r *request) parse(total int) fuse.Status {
	h := r.header()
	if int(h.Length) < inHeaderSize || int(h.Length) > total {
		return fuse.EINVAL
	}
	total = int(h.Length)
	if r.op == nil || r.op.fn == nil {
		return fuse.ENOSYS
	}
	if r.sess == nil && !r.op.preInit {
		return fuse.EIO
	}
	inSize := r.op.in
	switch {
	case h.Opcode == OpSetxattr && r.sess.Flags&fuse.CAP_SETXATTR_EXT != 0:
		inSize = sz[fuse.SetXAttrIn]()
	case h.Opcode == OpInit:
		// fuse_init_in grew from 16 to 64 bytes in 7.36.
		inSize = max(initInMinSize, min(total, sz[fuse.InitIn]()))
	}
	if total < inSize {
		return fuse.EIO
	}
	r.in.CopyOut(r.inBytes()[inHeaderSize:inSize])

	r.payloadLen = total - inSize
	if ext := int(h.TotalExtlen) * 8; ext > 0 {
		// Request extensions (security context, supplementary
		// groups) are only sent when negotiated, which we never do.
		if ext > r.payloadLen {
			return fuse.EIO
		}
		r.payloadLen -= ext
	}
	limit := r.op.maxPayload
	if limit == 0 {
		limit = maxNamePayload
	}
	if r.payloadLen > limit {
		return fuse.EINVAL
	}
	payload := r.in.Split(r.payloadLen)
	r.payload = payload.Buffers(r.payloadStore[:0])

	// The reply must fit: OutHeader, struct and the data asked for.
	r.outData = r.outBytes()[:r.op.out]
	need := outHeaderSize + r.op.out
	switch h.Opcode {
	case OpRead, OpReaddir, OpReaddirplus:
		n := int(inStruct[fuse.ReadIn](r).Size)
		if n > maxTransfer {
			return fuse.EINVAL
		}
		need += n
	case OpGetxattr, OpListxattr:
		if n := int(inStruct[fuse.GetXAttrIn](r).Size); n > maxNamePayload {
			return fuse.EINVAL // the kernel caps it at XATTR_SIZE_MAX
		} else if n > 0 {
			r.outData = nil
			need = outHeaderSize + n
		}
	case OpIoctl:
		n := int(inStruct[fuse.IoctlIn](r).OutSize)
		if n > maxBulkPayload {
			return fuse.EINVAL
		}
		need += n
	case OpInit:
		if inStruct[fuse.InitIn](r).Minor <= 22 {
			r.outData = r.outData[:initOutCompatSize]
			need = outHeaderSize + initOutCompatSize
		}
	}
	if need > r.room && !r.op.noReply {
		return fuse.ERANGE
	}
	return fuse.OK
}

// call runs the handler, turning a panic in the filesystem into EIO.
func (r *request) call() {
	defer func() {
		if v := recover(); v != nil {
			r.status = fuse.EIO
			r.logged = true
			if r.d.warnAllowed() {
				r.d.log.WithFields(r.fields()).Errorf("filesystem panic: %v\n%s", v, debug.Stack())
			} else {
				r.d.log.WithFields(r.fields()).Debugf("filesystem panic: %v", v)
			}
		}
	}()
	r.op.fn(r)
}

// payloadBytes returns the payload as one slice: the guest's own bytes when
// they sit in one buffer, else a gathered copy.
func (r *request) payloadBytes() []byte {
	switch {
	case r.payloadLen == 0:
		return nil
	case len(r.payload) == 1:
		return r.payload[0]
	}
	b := make([]byte, r.payloadLen)
	for i, n := 0, 0; i < len(r.payload); i++ {
		n += copy(b[n:], r.payload[i])
	}
	return b
}

// names returns the first n NUL-terminated strings of the payload, and
// what follows them.
func (r *request) names(n int) ([]string, []byte, fuse.Status) {
	p := r.payloadBytes()
	out := make([]string, 0, n)
	for range n {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			return nil, nil, fuse.EINVAL
		}
		out = append(out, string(p[:i]))
		p = p[i+1:]
	}
	return out, p, fuse.OK
}

// entryName returns the single entry name of the request, rejecting names
// no kernel sends: empty ones and ones with a slash.
func (r *request) entryName() (string, fuse.Status) {
	n, _, st := r.names(1)
	if !st.Ok() {
		return "", st
	}
	if !validName(n[0]) {
		return "", fuse.EINVAL
	}
	return n[0], fuse.OK
}

func validName(s string) bool {
	return s != "" && len(s) <= 1024 && !bytes.Contains([]byte(s), []byte{'/'})
}

// dataBuffer returns n bytes for the filesystem to fill with reply data:
// the guest's buffer right after the reply struct when it is contiguous
// (and 8-byte aligned if asked), else a scratch buffer.
func (r *request) dataBuffer(n int, aligned bool) []byte {
	if n == 0 {
		return nil
	}
	w := r.out
	w.Skip(outHeaderSize + len(r.outData))
	if b, ok := w.Contiguous(n); ok && (!aligned || uintptr(unsafe.Pointer(&b[0]))%8 == 0) {
		r.direct = b
		return b
	}
	b, p := r.d.getBuffer(n)
	r.pooled = p
	return b
}

// writeReply writes OutHeader, the reply struct and the data into r.out
// and returns the byte count.
func (r *request) writeReply() int {
	if r.status.Ok() && r.dataLen > 0 {
		return r.writeHeader(r.dataLen) // READ: the data is in place
	}
	if !r.status.Ok() {
		r.outData = nil
		r.outPayload = nil
		if !r.logged && r.status != fuse.ENOSYS && r.status != fuse.ENOENT {
			r.d.log.WithFields(r.fields()).Debugf("reply %v", r.status)
		}
		return r.writeHeader(0)
	}
	size := len(r.outData) + len(r.outPayload)
	if outHeaderSize+size > r.room {
		r.status = fuse.ERANGE
		r.violation(fmt.Sprintf("reply of %d bytes does not fit %d writable bytes", outHeaderSize+size, r.room))
		r.outData, r.outPayload = nil, nil
		return r.writeHeader(0)
	}
	w := r.out
	w.Skip(outHeaderSize)
	w.CopyIn(r.outData)
	if len(r.outPayload) > 0 && !(len(r.direct) > 0 && &r.direct[0] == &r.outPayload[0]) {
		w.CopyIn(r.outPayload)
	}
	return r.writeHeader(size)
}

// writeHeader writes OutHeader for size bytes after it (which must already
// be in place) and returns the reply length.
func (r *request) writeHeader(size int) int {
	if !r.status.Ok() {
		size = 0
	}
	oh := fuse.OutHeader{
		Length: uint32(outHeaderSize + size),
		Status: -int32(r.status),
		Unique: r.header().Unique,
	}
	w := r.out
	virtqueue.WriteObj(&w, &oh)
	return outHeaderSize + size
}

func (r *request) fields() logrus.Fields {
	h := r.header()
	return logrus.Fields{
		"req":    r.id,
		"unique": h.Unique,
		"op":     OpName(h.Opcode),
		"nodeid": h.NodeId,
		"queue":  r.queue,
	}
}

// violation logs a guest protocol error, rate-limited.
func (r *request) violation(msg string) {
	if r.logged {
		return
	}
	r.logged = true
	level := logrus.DebugLevel
	if r.d.warnAllowed() {
		level = logrus.WarnLevel
	}
	r.d.log.WithFields(r.fields()).Log(level, "bad FUSE request: "+msg)
}

// errno converts a syscall error into a status.
func errno(err error) fuse.Status {
	if e, ok := err.(syscall.Errno); ok {
		return fuse.Status(e)
	}
	return fuse.ToStatus(err)
}
