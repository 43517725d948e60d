package fusewire

import (
	"strconv"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// FUSE opcodes (include/uapi/linux/fuse.h). go-fuse keeps its own copy
// unexported, so the numbers are repeated here.
const (
	OpLookup          = 1
	OpForget          = 2
	OpGetattr         = 3
	OpSetattr         = 4
	OpReadlink        = 5
	OpSymlink         = 6
	OpMknod           = 8
	OpMkdir           = 9
	OpUnlink          = 10
	OpRmdir           = 11
	OpRename          = 12
	OpLink            = 13
	OpOpen            = 14
	OpRead            = 15
	OpWrite           = 16
	OpStatfs          = 17
	OpRelease         = 18
	OpFsync           = 20
	OpSetxattr        = 21
	OpGetxattr        = 22
	OpListxattr       = 23
	OpRemovexattr     = 24
	OpFlush           = 25
	OpInit            = 26
	OpOpendir         = 27
	OpReaddir         = 28
	OpReleasedir      = 29
	OpFsyncdir        = 30
	OpGetlk           = 31
	OpSetlk           = 32
	OpSetlkw          = 33
	OpAccess          = 34
	OpCreate          = 35
	OpInterrupt       = 36
	OpBmap            = 37
	OpDestroy         = 38
	OpIoctl           = 39
	OpPoll            = 40
	OpNotifyReply     = 41
	OpBatchForget     = 42
	OpFallocate       = 43
	OpReaddirplus     = 44
	OpRename2         = 45
	OpLseek           = 46
	OpCopyFileRange   = 47
	OpSetupMapping    = 48
	OpRemoveMapping   = 49
	OpSyncfs          = 50
	OpTmpfile         = 51
	OpStatx           = 52
	OpCopyFileRange64 = 53

	opCount = 54
)

const (
	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))

	// Sizes of the kernel structs go-fuse has no exported type for
	// (fuse_batch_forget_in, fuse_forget_one, fuse_bmap_in/out,
	// fuse_poll_in/out) or whose wire size depends on negotiation.
	batchForgetInSize  = inHeaderSize + 8
	forgetOneSize      = 16
	bmapInSize         = inHeaderSize + 16
	bmapOutSize        = 8
	pollInSize         = inHeaderSize + 24
	pollOutSize        = 8
	renameInSize       = inHeaderSize + 8  // fuse_rename_in: newdir
	setxattrInSize     = inHeaderSize + 8  // fuse_setxattr_in without SETXATTR_EXT
	initInMinSize      = inHeaderSize + 16 // fuse_init_in before 7.36
	initOutCompatSize  = 24                // fuse_init_out before 7.23
	maxNamePayload     = 64<<10 + 8<<10    // xattr values (XATTR_SIZE_MAX) plus names
	maxBulkPayload     = 1 << 20           // IOCTL data, BATCH_FORGET entries
	maxTransfer        = 16 << 20          // READ/WRITE/READDIR bound: 256 pages of 64 KiB
	inBufSize          = 256               // ≥ every input struct, header included
	outBufSize         = 512               // ≥ every output struct (StatxOut is 288)
	pooledBufferMaxCap = 1 << 20
)

// opHandler describes one opcode: how big its fixed input and output
// structs are, how many NUL-terminated names follow, and what to call.
type opHandler struct {
	name string
	// in is the size of InHeader plus the op struct; out the size of the
	// reply struct after OutHeader.
	in, out int
	// names is the number of NUL-terminated strings in the payload.
	names int
	// maxPayload bounds the payload after the struct.
	maxPayload int
	// noReply marks requests the guest expects no reply for.
	noReply bool
	// preInit marks requests allowed before INIT.
	preInit bool
	fn      func(*request)
}

func sz[T any]() int {
	var v T
	return int(unsafe.Sizeof(v))
}

// opTable is indexed by opcode. A zero entry (fn == nil) means ENOSYS.
// It is filled once by init (the handlers refer back to it through
// OpName) and only read afterwards.
var opTable [opCount]opHandler

func init() {
	opTable = [opCount]opHandler{
		OpLookup:          {name: "LOOKUP", in: inHeaderSize, out: sz[fuse.EntryOut](), names: 1, fn: doLookup},
		OpForget:          {name: "FORGET", in: sz[fuse.ForgetIn](), noReply: true, fn: doForget},
		OpGetattr:         {name: "GETATTR", in: sz[fuse.GetAttrIn](), out: sz[fuse.AttrOut](), fn: doGetattr},
		OpSetattr:         {name: "SETATTR", in: sz[fuse.SetAttrIn](), out: sz[fuse.AttrOut](), fn: doSetattr},
		OpReadlink:        {name: "READLINK", in: inHeaderSize, fn: doReadlink},
		OpSymlink:         {name: "SYMLINK", in: inHeaderSize, out: sz[fuse.EntryOut](), names: 2, fn: doSymlink},
		OpMknod:           {name: "MKNOD", in: sz[fuse.MknodIn](), out: sz[fuse.EntryOut](), names: 1, fn: doMknod},
		OpMkdir:           {name: "MKDIR", in: sz[fuse.MkdirIn](), out: sz[fuse.EntryOut](), names: 1, fn: doMkdir},
		OpUnlink:          {name: "UNLINK", in: inHeaderSize, names: 1, fn: doUnlink},
		OpRmdir:           {name: "RMDIR", in: inHeaderSize, names: 1, fn: doRmdir},
		OpRename:          {name: "RENAME", in: renameInSize, names: 2, fn: doRename},
		OpLink:            {name: "LINK", in: sz[fuse.LinkIn](), out: sz[fuse.EntryOut](), names: 1, fn: doLink},
		OpOpen:            {name: "OPEN", in: sz[fuse.OpenIn](), out: sz[fuse.OpenOut](), fn: doOpen},
		OpRead:            {name: "READ", in: sz[fuse.ReadIn](), fn: doRead},
		OpWrite:           {name: "WRITE", in: sz[fuse.WriteIn](), out: sz[fuse.WriteOut](), maxPayload: maxTransfer, fn: doWrite},
		OpStatfs:          {name: "STATFS", in: inHeaderSize, out: sz[fuse.StatfsOut](), fn: doStatfs},
		OpRelease:         {name: "RELEASE", in: sz[fuse.ReleaseIn](), fn: doRelease},
		OpFsync:           {name: "FSYNC", in: sz[fuse.FsyncIn](), fn: doFsync},
		OpSetxattr:        {name: "SETXATTR", in: setxattrInSize, names: 1, fn: doSetxattr},
		OpGetxattr:        {name: "GETXATTR", in: sz[fuse.GetXAttrIn](), out: sz[fuse.GetXAttrOut](), names: 1, fn: doGetxattr},
		OpListxattr:       {name: "LISTXATTR", in: sz[fuse.GetXAttrIn](), out: sz[fuse.GetXAttrOut](), fn: doListxattr},
		OpRemovexattr:     {name: "REMOVEXATTR", in: inHeaderSize, names: 1, fn: doRemovexattr},
		OpFlush:           {name: "FLUSH", in: sz[fuse.FlushIn](), fn: doFlush},
		OpInit:            {name: "INIT", in: initInMinSize, out: sz[fuse.InitOut](), preInit: true, fn: doInit},
		OpOpendir:         {name: "OPENDIR", in: sz[fuse.OpenIn](), out: sz[fuse.OpenOut](), fn: doOpendir},
		OpReaddir:         {name: "READDIR", in: sz[fuse.ReadIn](), fn: doReaddir},
		OpReleasedir:      {name: "RELEASEDIR", in: sz[fuse.ReleaseIn](), fn: doReleasedir},
		OpFsyncdir:        {name: "FSYNCDIR", in: sz[fuse.FsyncIn](), fn: doFsyncdir},
		OpGetlk:           {name: "GETLK", in: sz[fuse.LkIn](), out: sz[fuse.LkOut](), fn: doGetlk},
		OpSetlk:           {name: "SETLK", in: sz[fuse.LkIn](), fn: doSetlk},
		OpSetlkw:          {name: "SETLKW", in: sz[fuse.LkIn](), fn: doSetlkw},
		OpAccess:          {name: "ACCESS", in: sz[fuse.AccessIn](), fn: doAccess},
		OpCreate:          {name: "CREATE", in: sz[fuse.CreateIn](), out: sz[fuse.CreateOut](), names: 1, fn: doCreate},
		OpInterrupt:       {name: "INTERRUPT", in: sz[fuse.InterruptIn](), noReply: true, preInit: true, fn: doInterrupt},
		OpBmap:            {name: "BMAP", in: bmapInSize, out: bmapOutSize},
		OpDestroy:         {name: "DESTROY", in: inHeaderSize, fn: doDestroy},
		OpIoctl:           {name: "IOCTL", in: sz[fuse.IoctlIn](), out: sz[fuse.IoctlOut](), maxPayload: maxBulkPayload, fn: doIoctl},
		OpPoll:            {name: "POLL", in: pollInSize, out: pollOutSize},
		OpNotifyReply:     {name: "NOTIFY_REPLY", in: inHeaderSize, noReply: true, maxPayload: maxTransfer, fn: doNothing},
		OpBatchForget:     {name: "BATCH_FORGET", in: batchForgetInSize, noReply: true, maxPayload: maxBulkPayload, fn: doBatchForget},
		OpFallocate:       {name: "FALLOCATE", in: sz[fuse.FallocateIn](), fn: doFallocate},
		OpReaddirplus:     {name: "READDIRPLUS", in: sz[fuse.ReadIn](), fn: doReaddirplus},
		OpRename2:         {name: "RENAME2", in: sz[fuse.RenameIn](), names: 2, fn: doRename},
		OpLseek:           {name: "LSEEK", in: sz[fuse.LseekIn](), out: sz[fuse.LseekOut](), fn: doLseek},
		OpCopyFileRange:   {name: "COPY_FILE_RANGE", in: sz[fuse.CopyFileRangeIn](), out: sz[fuse.WriteOut](), fn: doCopyFileRange},
		OpSetupMapping:    {name: "SETUPMAPPING"},
		OpRemoveMapping:   {name: "REMOVEMAPPING"},
		OpSyncfs:          {name: "SYNCFS", in: inHeaderSize + 8, fn: doSyncfs},
		OpTmpfile:         {name: "TMPFILE", in: sz[fuse.CreateIn](), out: sz[fuse.CreateOut](), names: 1, fn: doTmpfile},
		OpStatx:           {name: "STATX", in: sz[fuse.StatxIn](), out: sz[fuse.StatxOut](), fn: doStatx},
		OpCopyFileRange64: {name: "COPY_FILE_RANGE_64"},
	}
}

// OpName returns the name of a FUSE opcode, or "OP_<n>" for unknown ones.
func OpName(op uint32) string {
	if op < opCount && opTable[op].name != "" {
		return opTable[op].name
	}
	return "OP_" + strconv.FormatUint(uint64(op), 10)
}
