package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Frontend request codes (vhost-user specification, "Front-end message types").
const (
	ReqGetFeatures         = 1
	ReqSetFeatures         = 2
	ReqSetOwner            = 3
	ReqResetOwner          = 4
	ReqSetMemTable         = 5
	ReqSetLogBase          = 6
	ReqSetLogFd            = 7
	ReqSetVringNum         = 8
	ReqSetVringAddr        = 9
	ReqSetVringBase        = 10
	ReqGetVringBase        = 11
	ReqSetVringKick        = 12
	ReqSetVringCall        = 13
	ReqSetVringErr         = 14
	ReqGetProtocolFeatures = 15
	ReqSetProtocolFeatures = 16
	ReqGetQueueNum         = 17
	ReqSetVringEnable      = 18
	ReqSetBackendReqFd     = 21
	ReqGetConfig           = 24
	ReqSetConfig           = 25
	ReqResetDevice         = 34
	ReqGetMaxMemSlots      = 36
	ReqAddMemReg           = 37
	ReqRemMemReg           = 38
)

// Header flags.
const (
	FlagVersion   = 0x1 // version 1 in the low two bits
	FlagReply     = 0x4
	FlagNeedReply = 0x8
	versionMask   = 0x3
)

// Virtio feature bits used by the transport.
const (
	FeatureRingIndirectDesc = 1 << 28
	FeatureRingEventIdx     = 1 << 29
	FeatureProtocolFeatures = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES
	FeatureVersion1         = 1 << 32
)

// Protocol feature bits.
const (
	ProtocolMQ                = 1 << 0
	ProtocolLogShmfd          = 1 << 1
	ProtocolReplyAck          = 1 << 3
	ProtocolBackendReq        = 1 << 5
	ProtocolBackendSendFd     = 1 << 10
	ProtocolConfigureMemSlots = 1 << 15
)

// VringFdNoFd is the "no file descriptor" flag in the u64 of
// SET_VRING_KICK/CALL/ERR; the low 8 bits are the queue index.
const (
	VringFdNoFd      = 0x100
	VringFdIndexMask = 0xff
)

// Limits.
const (
	HeaderSize     = 12
	MaxPayload     = 4096 // far above the largest message we accept (SET_MEM_TABLE: 264)
	MaxFds         = 8    // VHOST_MEMORY_BASELINE_NREGIONS
	MaxMemTableLen = 8
	MemRegionSize  = 32
	VringAddrSize  = 40
	VringStateSize = 8
	SingleRegSize  = 8 + MemRegionSize // ADD/REM_MEM_REG: u64 padding + region
)

// Header is the 12-byte little-endian message header.
type Header struct {
	Request uint32
	Flags   uint32
	Size    uint32
}

// NeedReply reports whether the sender asked for a REPLY_ACK status.
func (h Header) NeedReply() bool { return h.Flags&FlagNeedReply != 0 }

// PutHeader encodes h into b[:12].
func PutHeader(b []byte, h Header) {
	binary.LittleEndian.PutUint32(b[0:], h.Request)
	binary.LittleEndian.PutUint32(b[4:], h.Flags)
	binary.LittleEndian.PutUint32(b[8:], h.Size)
}

// ParseHeader decodes a header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("short header (%d bytes)", len(b))
	}
	h := Header{
		Request: binary.LittleEndian.Uint32(b[0:]),
		Flags:   binary.LittleEndian.Uint32(b[4:]),
		Size:    binary.LittleEndian.Uint32(b[8:]),
	}
	if h.Size > MaxPayload {
		return h, fmt.Errorf("request %d: payload of %d bytes: %w", h.Request, h.Size, ErrMalformed)
	}
	return h, nil
}

// ErrMalformed marks a message that does not parse; the session closes.
var ErrMalformed = errors.New("malformed vhost-user message")

// VringState is the payload of SET_VRING_NUM/BASE/ENABLE and GET_VRING_BASE.
type VringState struct {
	Index uint32
	Num   uint32
}

// VringAddr is the payload of SET_VRING_ADDR (frontend user addresses).
type VringAddr struct {
	Index uint32
	Flags uint32
	Desc  uint64
	Used  uint64
	Avail uint64
	Log   uint64
}

// MemRegion is one region of SET_MEM_TABLE, ADD_MEM_REG or REM_MEM_REG.
type MemRegion struct {
	GuestPhys  uint64
	Size       uint64
	UserAddr   uint64
	MmapOffset uint64
}

func need(req uint32, p []byte, n int) error {
	if len(p) < n {
		return fmt.Errorf("request %d: payload %d bytes, want %d: %w", req, len(p), n, ErrMalformed)
	}
	return nil
}

// ParseU64 decodes a u64 payload.
func ParseU64(req uint32, p []byte) (uint64, error) {
	if err := need(req, p, 8); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p), nil
}

// ParseVringState decodes a vring state payload.
func ParseVringState(req uint32, p []byte) (VringState, error) {
	if err := need(req, p, VringStateSize); err != nil {
		return VringState{}, err
	}
	return VringState{binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])}, nil
}

// ParseVringAddr decodes a vring address payload.
func ParseVringAddr(p []byte) (VringAddr, error) {
	if err := need(ReqSetVringAddr, p, VringAddrSize); err != nil {
		return VringAddr{}, err
	}
	le := binary.LittleEndian
	return VringAddr{le.Uint32(p), le.Uint32(p[4:]), le.Uint64(p[8:]), le.Uint64(p[16:]), le.Uint64(p[24:]), le.Uint64(p[32:])}, nil
}

func parseRegion(p []byte) MemRegion {
	le := binary.LittleEndian
	return MemRegion{le.Uint64(p), le.Uint64(p[8:]), le.Uint64(p[16:]), le.Uint64(p[24:])}
}

// ParseMemTable decodes SET_MEM_TABLE: u32 count, u32 padding, regions.
func ParseMemTable(p []byte) ([]MemRegion, error) {
	if err := need(ReqSetMemTable, p, 8); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(p)
	if n == 0 || n > MaxMemTableLen {
		return nil, fmt.Errorf("SET_MEM_TABLE with %d regions: %w", n, ErrMalformed)
	}
	if err := need(ReqSetMemTable, p, 8+int(n)*MemRegionSize); err != nil {
		return nil, err
	}
	out := make([]MemRegion, n)
	for i := range out {
		out[i] = parseRegion(p[8+i*MemRegionSize:])
	}
	return out, nil
}

// ParseSingleRegion decodes ADD_MEM_REG / REM_MEM_REG.
func ParseSingleRegion(req uint32, p []byte) (MemRegion, error) {
	if err := need(req, p, SingleRegSize); err != nil {
		return MemRegion{}, err
	}
	return parseRegion(p[8:]), nil
}

// AppendU64 appends a little-endian u64.
func AppendU64(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }

// AppendVringState appends a vring state payload.
func AppendVringState(b []byte, s VringState) []byte {
	b = binary.LittleEndian.AppendUint32(b, s.Index)
	return binary.LittleEndian.AppendUint32(b, s.Num)
}

// AppendVringAddr appends a vring address payload.
func AppendVringAddr(b []byte, a VringAddr) []byte {
	le := binary.LittleEndian
	b = le.AppendUint32(b, a.Index)
	b = le.AppendUint32(b, a.Flags)
	for _, v := range []uint64{a.Desc, a.Used, a.Avail, a.Log} {
		b = le.AppendUint64(b, v)
	}
	return b
}

// AppendMemRegion appends one region.
func AppendMemRegion(b []byte, r MemRegion) []byte {
	for _, v := range []uint64{r.GuestPhys, r.Size, r.UserAddr, r.MmapOffset} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// AppendMemTable appends a SET_MEM_TABLE payload.
func AppendMemTable(b []byte, rs []MemRegion) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(rs)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range rs {
		b = AppendMemRegion(b, r)
	}
	return b
}

// AppendSingleRegion appends an ADD_MEM_REG / REM_MEM_REG payload.
func AppendSingleRegion(b []byte, r MemRegion) []byte {
	return AppendMemRegion(AppendU64(b, 0), r)
}

// RequestName returns a readable name for logs.
func RequestName(req uint32) string {
	names := map[uint32]string{
		ReqGetFeatures: "GET_FEATURES", ReqSetFeatures: "SET_FEATURES", ReqSetOwner: "SET_OWNER",
		ReqResetOwner: "RESET_OWNER", ReqSetMemTable: "SET_MEM_TABLE", ReqSetLogBase: "SET_LOG_BASE",
		ReqSetLogFd: "SET_LOG_FD", ReqSetVringNum: "SET_VRING_NUM", ReqSetVringAddr: "SET_VRING_ADDR",
		ReqSetVringBase: "SET_VRING_BASE", ReqGetVringBase: "GET_VRING_BASE", ReqSetVringKick: "SET_VRING_KICK",
		ReqSetVringCall: "SET_VRING_CALL", ReqSetVringErr: "SET_VRING_ERR",
		ReqGetProtocolFeatures: "GET_PROTOCOL_FEATURES", ReqSetProtocolFeatures: "SET_PROTOCOL_FEATURES",
		ReqGetQueueNum: "GET_QUEUE_NUM", ReqSetVringEnable: "SET_VRING_ENABLE",
		ReqSetBackendReqFd: "SET_BACKEND_REQ_FD", ReqGetConfig: "GET_CONFIG", ReqSetConfig: "SET_CONFIG",
		ReqResetDevice: "RESET_DEVICE", ReqGetMaxMemSlots: "GET_MAX_MEM_SLOTS", ReqAddMemReg: "ADD_MEM_REG",
		ReqRemMemReg: "REM_MEM_REG",
	}
	if n, ok := names[req]; ok {
		return n
	}
	return fmt.Sprintf("request %d", req)
}
