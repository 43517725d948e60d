package fuseclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// SendFunc delivers one request: readable are the device-readable buffers
// (the request), writableSizes the sizes of the device-writable buffers
// (room for the reply). It returns the bytes the device wrote, in order
// (the writable buffers concatenated and cut at the written length).
type SendFunc func(readable [][]byte, writableSizes []int) ([]byte, error)

// Client builds and sends FUSE requests. Set the exported fields before
// use; a Client is safe for concurrent calls.
type Client struct {
	send SendFunc
	// Hiprio, if set, carries FORGET and BATCH_FORGET (virtio-fs queue 0);
	// otherwise they go through the main SendFunc.
	Hiprio SendFunc
	// SplitReadable cuts a request into readable buffers (default: header
	// and struct in one buffer, payload in another, as Linux does).
	SplitReadable func(req []byte, structEnd int) [][]byte
	// SplitWritable cuts the reply room into writable sizes (default:
	// OutHeader and reply struct in one, the data part in another).
	SplitWritable func(structEnd, total int) []int
	// Caller is put in every request header.
	Caller fuse.Caller

	unique atomic.Uint64
}

// New returns a client sending through send.
func New(send SendFunc) *Client {
	return &Client{send: send, Caller: fuse.Caller{Owner: fuse.Owner{Uid: 0, Gid: 0}, Pid: 1}}
}

const (
	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))
)

// Bytes returns the wire bytes of a go-fuse struct.
func Bytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// Build returns the bytes of a request: InHeader (with length, opcode,
// unique, nodeid and caller filled in), then in (the op struct without
// its InHeader), then the payloads.
func (c *Client) Build(op uint32, nodeid uint64, in []byte, payload ...[]byte) []byte {
	n := inHeaderSize + len(in)
	for _, p := range payload {
		n += len(p)
	}
	b := make([]byte, 0, n)
	h := fuse.InHeader{Length: uint32(n), Opcode: op, Unique: c.unique.Add(1), NodeId: nodeid, Caller: c.Caller}
	b = append(b, Bytes(&h)...)
	b = append(b, in...)
	for _, p := range payload {
		b = append(b, p...)
	}
	return b
}

// Reply is a parsed reply.
type Reply struct {
	Header fuse.OutHeader
	// Body is everything after OutHeader.
	Body []byte
}

// ParseReply parses the bytes a device wrote. Zero bytes (no reply) is an
// error.
func ParseReply(b []byte) (*Reply, error) {
	if len(b) < outHeaderSize {
		return nil, fmt.Errorf("reply of %d bytes is shorter than OutHeader", len(b))
	}
	r := &Reply{}
	copy(Bytes(&r.Header), b)
	if int(r.Header.Length) != len(b) {
		return nil, fmt.Errorf("reply length field %d but %d bytes written", r.Header.Length, len(b))
	}
	r.Body = b[outHeaderSize:]
	return r, nil
}

// ErrNoReply is returned when the device wrote nothing.
var ErrNoReply = errors.New("no reply")

// Call sends a request and returns the reply body. replyRoom is the room
// offered after OutHeader; structSize the reply's struct part (for
// SplitWritable). A FUSE error comes back as a syscall.Errno.
func (c *Client) Call(op uint32, nodeid uint64, in []byte, payload []byte, structSize, replyRoom int) ([]byte, error) {
	req := c.Build(op, nodeid, in, payload)
	out, err := c.roundTrip(c.send, req, inHeaderSize+len(in), outHeaderSize+structSize, outHeaderSize+replyRoom)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, ErrNoReply
	}
	r, err := ParseReply(out)
	if err != nil {
		return nil, err
	}
	if r.Header.Status != 0 {
		if len(r.Body) != 0 {
			return nil, fmt.Errorf("error reply %d carries %d bytes", r.Header.Status, len(r.Body))
		}
		return nil, syscall.Errno(-r.Header.Status)
	}
	return r.Body, nil
}

func (c *Client) roundTrip(send SendFunc, req []byte, inStructEnd, outStructEnd, room int) ([]byte, error) {
	var readable [][]byte
	if c.SplitReadable != nil {
		readable = c.SplitReadable(req, inStructEnd)
	} else {
		readable = [][]byte{req[:inStructEnd]}
		if len(req) > inStructEnd {
			readable = append(readable, req[inStructEnd:])
		}
	}
	var sizes []int
	if c.SplitWritable != nil {
		sizes = c.SplitWritable(outStructEnd, room)
	} else if room > outStructEnd {
		sizes = []int{outStructEnd, room - outStructEnd}
	} else {
		sizes = []int{room}
	}
	return send(readable, sizes)
}

// decode copies b into a T, failing when b is shorter.
func decode[T any](b []byte) (*T, error) {
	v := new(T)
	dst := Bytes(v)
	if len(b) < len(dst) {
		return nil, fmt.Errorf("reply body of %d bytes, want %d", len(b), len(dst))
	}
	copy(dst, b)
	return v, nil
}

// after returns the bytes of a go-fuse input struct after its InHeader.
func after[T any](v *T) []byte { return Bytes(v)[inHeaderSize:] }

func name(s string) []byte { return append([]byte(s), 0) }

// Init sends INIT as a Linux guest of protocol 7.minor would, with the
// given flags (bits 32-63 go in flags2) and max_readahead.
func (c *Client) Init(minor uint32, flags uint64, maxReadahead uint32) (*fuse.InitOut, error) {
	in := fuse.InitIn{Major: 7, Minor: minor, MaxReadAhead: maxReadahead, Flags: uint32(flags) | 1<<30, Flags2: uint32(flags >> 32)}
	if minor < 36 {
		in.Flags &^= 1 << 30
	}
	b := after(&in)
	if minor < 36 {
		b = b[:16]
	}
	body, err := c.Call(26, 0, b, nil, int(unsafe.Sizeof(fuse.InitOut{})), int(unsafe.Sizeof(fuse.InitOut{})))
	if err != nil {
		return nil, err
	}
	out := new(fuse.InitOut)
	copy(Bytes(out), body)
	return out, nil
}

// Lookup looks name up in parent.
func (c *Client) Lookup(parent uint64, n string) (*fuse.EntryOut, error) {
	return c.entry(1, parent, nil, name(n))
}

func (c *Client) entry(op uint32, nodeid uint64, in, payload []byte) (*fuse.EntryOut, error) {
	size := int(unsafe.Sizeof(fuse.EntryOut{}))
	body, err := c.Call(op, nodeid, in, payload, size, size)
	if err != nil {
		return nil, err
	}
	return decode[fuse.EntryOut](body)
}

// Forget drops nlookup references to nodeid. FORGET has no reply.
func (c *Client) Forget(nodeid, nlookup uint64) error {
	in := fuse.ForgetIn{Nlookup: nlookup}
	return c.noReply(2, nodeid, after(&in), nil)
}

// BatchForget forgets several nodes: pairs of (nodeid, nlookup).
func (c *Client) BatchForget(pairs [][2]uint64) error {
	in := make([]byte, 8)
	binary.LittleEndian.PutUint32(in, uint32(len(pairs)))
	p := make([]byte, 16*len(pairs))
	for i, e := range pairs {
		binary.LittleEndian.PutUint64(p[16*i:], e[0])
		binary.LittleEndian.PutUint64(p[16*i+8:], e[1])
	}
	return c.noReply(42, 0, in, p)
}

func (c *Client) noReply(op uint32, nodeid uint64, in, payload []byte) error {
	send := c.Hiprio
	if send == nil {
		send = c.send
	}
	req := c.Build(op, nodeid, in, payload)
	out, err := c.roundTrip(send, req, inHeaderSize+len(in), outHeaderSize, outHeaderSize)
	if err != nil {
		return err
	}
	if len(out) != 0 {
		return fmt.Errorf("opcode %d got a %d-byte reply, want none", op, len(out))
	}
	return nil
}

// GetAttr returns the attributes of nodeid.
func (c *Client) GetAttr(nodeid uint64) (*fuse.AttrOut, error) {
	in := fuse.GetAttrIn{}
	size := int(unsafe.Sizeof(fuse.AttrOut{}))
	body, err := c.Call(3, nodeid, after(&in), nil, size, size)
	if err != nil {
		return nil, err
	}
	return decode[fuse.AttrOut](body)
}

func (c *Client) open(op uint32, nodeid uint64, flags uint32) (*fuse.OpenOut, error) {
	in := fuse.OpenIn{Flags: flags}
	size := int(unsafe.Sizeof(fuse.OpenOut{}))
	body, err := c.Call(op, nodeid, after(&in), nil, size, size)
	if err != nil {
		return nil, err
	}
	return decode[fuse.OpenOut](body)
}

// Open opens nodeid with open(2) flags.
func (c *Client) Open(nodeid uint64, flags uint32) (*fuse.OpenOut, error) {
	return c.open(14, nodeid, flags)
}

// OpenDir opens directory nodeid.
func (c *Client) OpenDir(nodeid uint64) (*fuse.OpenOut, error) {
	return c.open(27, nodeid, 0)
}

// Read reads up to size bytes at off from handle fh of nodeid.
func (c *Client) Read(nodeid, fh uint64, off uint64, size uint32) ([]byte, error) {
	in := fuse.ReadIn{Fh: fh, Offset: off, Size: size}
	return c.Call(15, nodeid, after(&in), nil, 0, int(size))
}

// Write writes data at off through handle fh of nodeid.
func (c *Client) Write(nodeid, fh uint64, off uint64, data []byte) (uint32, error) {
	in := fuse.WriteIn{Fh: fh, Offset: off, Size: uint32(len(data))}
	size := int(unsafe.Sizeof(fuse.WriteOut{}))
	body, err := c.Call(16, nodeid, after(&in), data, size, size)
	if err != nil {
		return 0, err
	}
	out, err := decode[fuse.WriteOut](body)
	if err != nil {
		return 0, err
	}
	return out.Size, nil
}

// Release closes handle fh of nodeid.
func (c *Client) Release(nodeid, fh uint64) error {
	return c.release(18, nodeid, fh)
}

// ReleaseDir closes directory handle fh of nodeid.
func (c *Client) ReleaseDir(nodeid, fh uint64) error {
	return c.release(29, nodeid, fh)
}

func (c *Client) release(op uint32, nodeid, fh uint64) error {
	in := fuse.ReleaseIn{Fh: fh}
	_, err := c.Call(op, nodeid, after(&in), nil, 0, 0)
	return err
}

// Mkdir makes directory n in parent.
func (c *Client) Mkdir(parent uint64, n string, mode uint32) (*fuse.EntryOut, error) {
	in := fuse.MkdirIn{Mode: mode}
	return c.entry(9, parent, after(&in), name(n))
}

// Link makes n in parent a hard link to node oldnodeid.
func (c *Client) Link(oldnodeid, parent uint64, n string) (*fuse.EntryOut, error) {
	in := fuse.LinkIn{Oldnodeid: oldnodeid}
	return c.entry(13, parent, after(&in), name(n))
}

// Unlink removes file n from parent.
func (c *Client) Unlink(parent uint64, n string) error {
	_, err := c.Call(10, parent, nil, name(n), 0, 0)
	return err
}

// Create creates and opens file n in parent.
func (c *Client) Create(parent uint64, n string, flags, mode uint32) (*fuse.CreateOut, error) {
	in := fuse.CreateIn{Flags: flags, Mode: mode}
	size := int(unsafe.Sizeof(fuse.CreateOut{}))
	body, err := c.Call(35, parent, after(&in), name(n), size, size)
	if err != nil {
		return nil, err
	}
	return decode[fuse.CreateOut](body)
}

// StatFs returns filesystem statistics.
func (c *Client) StatFs() (*fuse.StatfsOut, error) {
	size := int(unsafe.Sizeof(fuse.StatfsOut{}))
	body, err := c.Call(17, 1, nil, nil, size, size)
	if err != nil {
		return nil, err
	}
	return decode[fuse.StatfsOut](body)
}

// Destroy ends the session.
func (c *Client) Destroy() error {
	_, err := c.Call(38, 0, nil, nil, 0, 0)
	return err
}

// DirEntry is one entry of a READDIR or READDIRPLUS reply.
type DirEntry struct {
	Ino  uint64
	Off  uint64
	Type uint32
	Name string
	// Entry is set for READDIRPLUS.
	Entry *fuse.EntryOut
}

// ReadDir lists directory handle fh of nodeid from off, in size bytes.
func (c *Client) ReadDir(nodeid, fh, off uint64, size uint32) ([]DirEntry, error) {
	return c.readDir(28, nodeid, fh, off, size)
}

// ReadDirPlus lists with attributes.
func (c *Client) ReadDirPlus(nodeid, fh, off uint64, size uint32) ([]DirEntry, error) {
	return c.readDir(44, nodeid, fh, off, size)
}

func (c *Client) readDir(op uint32, nodeid, fh, off uint64, size uint32) ([]DirEntry, error) {
	in := fuse.ReadIn{Fh: fh, Offset: off, Size: size}
	body, err := c.Call(op, nodeid, after(&in), nil, 0, int(size))
	if err != nil {
		return nil, err
	}
	return ParseDirEntries(body, op == 44)
}

// ParseDirEntries parses a READDIR (plus=false) or READDIRPLUS body.
func ParseDirEntries(b []byte, plus bool) ([]DirEntry, error) {
	entrySize := int(unsafe.Sizeof(fuse.EntryOut{}))
	var out []DirEntry
	for len(b) > 0 {
		var e DirEntry
		if plus {
			eo, err := decode[fuse.EntryOut](b)
			if err != nil {
				return nil, err
			}
			e.Entry = eo
			b = b[entrySize:]
		}
		if len(b) < 24 {
			return nil, fmt.Errorf("dirent header truncated: %d bytes", len(b))
		}
		e.Ino = binary.LittleEndian.Uint64(b)
		e.Off = binary.LittleEndian.Uint64(b[8:])
		nameLen := int(binary.LittleEndian.Uint32(b[16:]))
		e.Type = binary.LittleEndian.Uint32(b[20:])
		rec := (24 + nameLen + 7) &^ 7
		if nameLen > len(b)-24 || rec > len(b) {
			return nil, fmt.Errorf("dirent name of %d bytes overruns %d", nameLen, len(b))
		}
		e.Name = string(b[24 : 24+nameLen])
		b = b[rec:]
		out = append(out, e)
	}
	return out, nil
}

// PageLayout makes the client lay requests out as a Linux guest does for
// page arguments: the header and struct in one buffer, then the payload
// (WRITE data) and the reply's data part (READ, READDIR) cut into buffers
// of page bytes.
func (c *Client) PageLayout(page int) {
	c.SplitReadable = func(req []byte, structEnd int) [][]byte {
		out := [][]byte{req[:structEnd]}
		for p := req[structEnd:]; len(p) > 0; {
			n := min(page, len(p))
			out = append(out, p[:n])
			p = p[n:]
		}
		return out
	}
	c.SplitWritable = func(structEnd, total int) []int {
		out := []int{structEnd}
		for rest := total - structEnd; rest > 0; rest -= page {
			out = append(out, min(page, rest))
		}
		return out
	}
}
