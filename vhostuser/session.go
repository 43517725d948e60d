package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// transportFeatures are the virtio feature bits the transport offers.
const transportFeatures = FeatureVersion1 | FeatureRingIndirectDesc | FeatureRingEventIdx | FeatureProtocolFeatures

// offeredProtocol are the protocol features offered. BACKEND_REQ is not:
// virtio-fs has nothing to send the frontend without DAX, though a
// SET_BACKEND_REQ_FD is still accepted.
const offeredProtocol = ProtocolMQ | ProtocolReplyAck | ProtocolConfigureMemSlots

// opError is a request that parsed but could not be carried out: it is
// answered with a failure status when REPLY_ACK allows, and the session goes
// on. Any other error from a handler ends the session.
type opError struct{ err error }

func (e *opError) Error() string { return e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

func failed(format string, args ...any) error { return &opError{fmt.Errorf(format, args...)} }

type session struct {
	ctx        context.Context // the session's: handed to the device
	shutdown   context.Context // Serve's: ends waits for stuck requests
	conn       *Conn
	dev        Device
	opts       Options
	log        *logrus.Entry
	mem        *virtqueue.GuestMemory
	features   uint64
	protocol   uint64
	protoSet   bool // SET_PROTOCOL_FEATURES seen
	vrings     []*vring
	backendReq *os.File
	abandoned  bool // a queue stopped without waiting for its requests
}

func newSession(ctx, shutdown context.Context, conn *Conn, dev Device, opts Options) *session {
	s := &session{ctx: ctx, shutdown: shutdown, conn: conn, dev: dev, opts: opts, log: opts.Logger.WithFields(nil), mem: virtqueue.NewGuestMemory()}
	for i := 0; i < 1+opts.RequestQueues; i++ {
		s.vrings = append(s.vrings, newVring(i))
	}
	return s
}

func (s *session) offeredFeatures() uint64 { return transportFeatures | s.dev.Features() }

// run reads and handles messages until the frontend leaves or a message is
// bad. It returns nil on a clean disconnect.
func (s *session) run() error {
	for {
		m, err := s.conn.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read message: %w", err)
		}
		if err := s.dispatch(&m); err != nil {
			return err
		}
	}
}

func (s *session) dispatch(m *Message) error {
	log := s.log.WithFields(logrus.Fields{"request": RequestName(m.Request), "flags": m.Flags, "size": m.Size, "fds": len(m.Fds)})
	if log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		log.Debug("vhost-user message")
	}
	if m.Flags&versionMask != FlagVersion || m.Flags&FlagReply != 0 {
		m.CloseFds()
		return fmt.Errorf("%s: bad flags %#x: %w", RequestName(m.Request), m.Flags, ErrMalformed)
	}
	var reply []byte
	var err error
	if m.FdsLost {
		err = s.fdsLost(m)
	} else {
		reply, err = s.handle(m)
	}
	m.CloseFds() // whatever the handler did not take
	var op *opError
	if err != nil && !errors.As(err, &op) {
		log.WithError(err).Error("closing the session")
		return err
	}
	if err != nil {
		log.WithError(err).Error("request failed")
	}
	if reply != nil {
		return s.conn.Send(m.Request, FlagVersion|FlagReply, reply, nil)
	}
	if m.NeedReply() && s.protocol&ProtocolReplyAck != 0 {
		status := uint64(0)
		if err != nil {
			status = 1
		}
		var b [8]byte
		return s.conn.Send(m.Request, FlagVersion|FlagReply, AppendU64(b[:0], status), nil)
	}
	if err != nil {
		// Without REPLY_ACK the frontend cannot learn of the failure;
		// ending the session is the only honest answer.
		return err
	}
	return nil
}

// fdsLost handles a message whose fds the kernel could not give us (the
// process is out of fds, most likely because the guest holds them all).
// The daemon stays up: a ring whose kick fd was lost stops until the next
// SET_VRING_KICK, a lost call or error fd leaves the previous one in place,
// and any other such message fails. Each case is logged as an error and
// the session goes on, with a failure status when one is asked for.
func (s *session) fdsLost(m *Message) error {
	log := s.log.WithFields(logrus.Fields{"request": RequestName(m.Request), "fds_received": len(m.Fds)})
	switch m.Request {
	case ReqSetVringKick, ReqSetVringCall, ReqSetVringErr:
		v, _, err := s.fdVring(m)
		if err != nil {
			return err
		}
		if m.Request == ReqSetVringKick {
			log.WithField("queue", v.index).Error("the kick fd was lost (out of file descriptors): the queue stays stopped until the next SET_VRING_KICK")
			_ = s.setKick(v, -1)
		} else {
			log.WithField("queue", v.index).Error("the fd was lost (out of file descriptors): keeping the previous one")
		}
		if m.NeedReply() && s.protocol&ProtocolReplyAck != 0 {
			return failed("%s: fds lost (out of file descriptors)", RequestName(m.Request))
		}
		return nil
	}
	log.Error("message fds lost (out of file descriptors)")
	return failed("%s: fds lost (out of file descriptors)", RequestName(m.Request))
}

// takeFd removes the single fd a message must carry (or none with the
// VringFdNoFd flag) and wraps it.
func takeFd(m *Message, want bool, name string) (*os.File, error) {
	fd, err := takeRawFd(m, want)
	if err != nil || fd < 0 {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// takeRawFd is takeFd without the wrapping; -1 for none.
func takeRawFd(m *Message, want bool) (int, error) {
	if !want {
		if len(m.Fds) != 0 {
			return -1, fmt.Errorf("%s: unexpected fd: %w", RequestName(m.Request), ErrMalformed)
		}
		return -1, nil
	}
	if len(m.Fds) != 1 {
		return -1, fmt.Errorf("%s: %d fds, want 1: %w", RequestName(m.Request), len(m.Fds), ErrMalformed)
	}
	fd := m.Fds[0]
	m.Fds = nil
	return fd, nil
}

func (s *session) vring(idx uint32) (*vring, error) {
	if idx >= uint32(len(s.vrings)) {
		return nil, fmt.Errorf("queue index %d of %d: %w", idx, len(s.vrings), ErrMalformed)
	}
	return s.vrings[idx], nil
}

// handle carries out one request and returns its natural reply payload,
// if the request has one.
func (s *session) handle(m *Message) ([]byte, error) {
	p := m.Payload
	switch m.Request {
	case ReqSetMemTable, ReqAddMemReg, ReqRemMemReg, ReqResetOwner:
		for _, v := range s.vrings {
			v.trace.add(evMsg, uint16(m.Request), 0, 0, 0)
		}
	}
	switch m.Request {
	case ReqGetFeatures:
		return AppendU64(nil, s.offeredFeatures()), nil
	case ReqSetFeatures:
		v, err := ParseU64(m.Request, p)
		if err != nil {
			return nil, err
		}
		if v&^s.offeredFeatures() != 0 {
			return nil, failed("SET_FEATURES %#x includes features not offered (%#x)", v, v&^s.offeredFeatures())
		}
		s.features = v
		return nil, s.startReady()
	case ReqGetProtocolFeatures:
		return AppendU64(nil, offeredProtocol), nil
	case ReqSetProtocolFeatures:
		v, err := ParseU64(m.Request, p)
		if err != nil {
			return nil, err
		}
		if v&^uint64(offeredProtocol) != 0 {
			return nil, failed("SET_PROTOCOL_FEATURES %#x includes features not offered", v)
		}
		s.protocol, s.protoSet = v, true
		return nil, nil
	case ReqSetOwner:
		return nil, nil
	case ReqResetOwner:
		s.stopAll(true)
		s.features = 0
		return nil, nil
	case ReqGetQueueNum:
		return AppendU64(nil, uint64(len(s.vrings))), nil
	case ReqGetMaxMemSlots:
		return AppendU64(nil, MaxMemSlots), nil
	case ReqSetMemTable:
		return nil, s.setMemTable(m)
	case ReqAddMemReg:
		r, err := ParseSingleRegion(m.Request, p)
		if err != nil {
			return nil, err
		}
		f, err := takeFd(m, true, "memory")
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if s.mem.NumRegions() >= MaxMemSlots {
			return nil, failed("ADD_MEM_REG: all %d slots in use", MaxMemSlots)
		}
		if err := s.mem.Add(regionSpec(r, int(f.Fd()))); err != nil {
			return nil, &opError{err}
		}
		return nil, s.startReady()
	case ReqRemMemReg:
		r, err := ParseSingleRegion(m.Request, p)
		if err != nil {
			return nil, err
		}
		if err := s.mem.Remove(r.GuestPhys, r.Size); err != nil {
			return nil, &opError{err}
		}
		return nil, nil
	case ReqSetVringNum, ReqSetVringBase, ReqSetVringEnable, ReqGetVringBase:
		st, err := ParseVringState(m.Request, p)
		if err != nil {
			return nil, err
		}
		v, err := s.vring(st.Index)
		if err != nil {
			return nil, err
		}
		return s.handleState(m.Request, v, st)
	case ReqSetVringAddr:
		a, err := ParseVringAddr(p)
		if err != nil {
			return nil, err
		}
		v, err := s.vring(a.Index)
		if err != nil {
			return nil, err
		}
		if v.run != nil {
			return nil, failed("SET_VRING_ADDR on running queue %d", a.Index)
		}
		v.addr, v.addrSet = a, true
		v.trace.add(evMsg, uint16(m.Request), 0, 0, 0)
		return nil, nil
	case ReqSetVringKick, ReqSetVringCall, ReqSetVringErr:
		return nil, s.setVringFd(m)
	case ReqSetBackendReqFd:
		f, err := takeFd(m, true, "backend request")
		if err != nil {
			return nil, err
		}
		if s.backendReq != nil {
			s.backendReq.Close()
		}
		s.backendReq = f
		return nil, nil
	default:
		return nil, fmt.Errorf("unsupported %s: %w", RequestName(m.Request), ErrMalformed)
	}
}

func regionSpec(r MemRegion, fd int) virtqueue.RegionSpec {
	return virtqueue.RegionSpec{GuestPhys: r.GuestPhys, Size: r.Size, UserAddr: r.UserAddr, MmapOffset: r.MmapOffset, Fd: fd}
}

func (s *session) setMemTable(m *Message) error {
	regions, err := ParseMemTable(m.Payload)
	if err != nil {
		return err
	}
	if len(m.Fds) != len(regions) {
		return fmt.Errorf("SET_MEM_TABLE: %d regions but %d fds: %w", len(regions), len(m.Fds), ErrMalformed)
	}
	specs := make([]virtqueue.RegionSpec, len(regions))
	for i, r := range regions {
		specs[i] = regionSpec(r, m.Fds[i])
	}
	if err := s.mem.SetTable(specs); err != nil {
		return &opError{err}
	}
	return s.startReady()
}

func (s *session) handleState(req uint32, v *vring, st VringState) ([]byte, error) {
	v.trace.add(evMsg, uint16(req), uint16(st.Num), 0, 0)
	switch req {
	case ReqSetVringNum:
		n := st.Num
		if n == 0 || n > virtqueue.MaxQueueSize || n&(n-1) != 0 {
			return nil, failed("SET_VRING_NUM %d for queue %d: not a power of two up to %d", n, v.index, virtqueue.MaxQueueSize)
		}
		if v.run != nil {
			return nil, failed("SET_VRING_NUM on running queue %d", v.index)
		}
		v.size = uint16(n)
	case ReqSetVringBase:
		if v.run != nil {
			return nil, failed("SET_VRING_BASE on running queue %d", v.index)
		}
		if st.Num > 0xffff {
			return nil, failed("SET_VRING_BASE %d out of range", st.Num)
		}
		v.base = uint16(st.Num)
	case ReqSetVringEnable:
		if st.Num > 1 {
			return nil, fmt.Errorf("SET_VRING_ENABLE %d: %w", st.Num, ErrMalformed)
		}
		v.enabled = st.Num == 1
		if !v.enabled {
			s.stop(v, true)
			return nil, nil
		}
		return nil, s.startReady()
	case ReqGetVringBase:
		s.stop(v, true)
		// The ring is stopped until the next SET_VRING_KICK.
		if v.kick != nil {
			v.kick.Close()
			v.kick = nil
		}
		return AppendVringState(nil, VringState{Index: st.Index, Num: uint32(v.base)}), nil
	}
	return nil, nil
}

// fdVring parses a SET_VRING_KICK/CALL/ERR payload: its ring and flags.
func (s *session) fdVring(m *Message) (*vring, uint64, error) {
	u, err := ParseU64(m.Request, m.Payload)
	if err != nil {
		return nil, 0, err
	}
	v, err := s.vring(uint32(u & VringFdIndexMask))
	return v, u, err
}

func (s *session) setVringFd(m *Message) error {
	v, u, err := s.fdVring(m)
	if err != nil {
		return err
	}
	v.trace.add(evMsg, uint16(m.Request), uint16(u>>8), 0, 0) // num: the NOFD flag
	if m.Request == ReqSetVringKick {
		fd, err := takeRawFd(m, u&VringFdNoFd == 0)
		if err != nil {
			return err
		}
		return s.setKick(v, fd)
	}
	if m.Request == ReqSetVringCall {
		fd, err := takeRawFd(m, u&VringFdNoFd == 0)
		if err != nil {
			return err
		}
		v.setCall(s.eventFile(fd, "call"))
		return nil
	}
	f, err := takeFd(m, u&VringFdNoFd == 0, RequestName(m.Request))
	if err != nil {
		return err
	}
	switch m.Request {
	case ReqSetVringErr:
		if v.errFd != nil {
			v.errFd.Close()
		}
		v.errFd = f
	}
	return nil
}

// setKick installs a new kick fd (-1: none) for v, stopping its ring first.
func (s *session) setKick(v *vring, fd int) error {
	s.stop(v, true)
	if v.kick != nil {
		v.kick.Close()
		v.kick = nil
	}
	if fd < 0 {
		// Polling mode is not supported: the ring stays stopped.
		s.log.WithField("queue", v.index).Warn("SET_VRING_KICK without an fd: queue will not run")
		return nil
	}
	// The fd is made non-blocking before it is wrapped: in the poller
	// modes os.NewFile then registers it with the runtime poller, so that
	// stopping the kick loop is only a read deadline away; in the ppoll
	// modes (eventFile) the read after a wake-up must never block. No
	// dup: a guest holding every fd must not be able to make a ring
	// restart fail.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return failed("kick fd: %v", err)
	}
	v.kick = s.eventFile(fd, "kick")
	return s.startReady()
}

// eventFile wraps a kick or call eventfd fd (-1: none, nil) as the kick
// wait mode wants it: through the runtime poller, or outside it
// (eventFD) for the ppoll modes, whose leader waits in ppoll(2) itself
// and whose signals must not wake the netpoller.
func (s *session) eventFile(fd int, name string) kickFile {
	switch {
	case fd < 0:
		return nil
	case s.opts.KickWait == KickWaitPpoll || s.opts.KickWait == KickWaitInlinePpoll:
		return newEventFD(fd)
	default:
		return os.NewFile(uintptr(fd), name)
	}
}

// ringsEnabledByDefault: without VHOST_USER_F_PROTOCOL_FEATURES rings start
// enabled; with it they wait for SET_VRING_ENABLE(1).
func (s *session) ringsEnabledByDefault() bool {
	return s.features&FeatureProtocolFeatures == 0 && !s.protoSet
}

// startReady starts every queue that has everything it needs.
func (s *session) startReady() error {
	if s.mem.NumRegions() == 0 {
		return nil
	}
	for _, v := range s.vrings {
		if v.run != nil || v.kick == nil || !v.addrSet || v.size == 0 || !(v.enabled || s.ringsEnabledByDefault()) {
			continue
		}
		snap := s.mem.Acquire()
		q, err := virtqueue.NewQueue(snap, virtqueue.Config{
			Size: v.size, Desc: v.addr.Desc, Avail: v.addr.Avail, Used: v.addr.Used,
			EventIdx: s.features&FeatureRingEventIdx != 0, Base: v.base,
		})
		snap.Release()
		if err != nil {
			return failed("starting queue %d: %v", v.index, err)
		}
		v.run = startRunner(s.ctx, v, q, s.mem, s.dev, s.opts, s.log)
		s.log.WithFields(logrus.Fields{"queue": v.index, "size": v.size, "base": v.base}).Debug("queue started")
	}
	return nil
}

// stop stops a running queue and records where it stopped. It reports
// false if the stop position is unknown (no wait, or shutdown). Requests
// stuck in the device past Options.StopTimeout are abandoned (logged), so
// that the frontend's GET_VRING_BASE is answered within that bound.
func (s *session) stop(v *vring, wait bool) bool {
	if v.run == nil {
		return true
	}
	r := v.run
	v.run = nil
	based, complete := r.stopAndWait(wait, s.shutdown.Done(), s.opts.StopTimeout)
	if !complete {
		s.abandoned = true
	}
	if !based {
		return false
	}
	v.base = r.q.LastAvail()
	return true
}

func (s *session) stopAll(wait bool) {
	for _, v := range s.vrings {
		s.stop(v, wait)
	}
}

// teardown stops every queue and releases everything the session holds.
// With wait false (shutdown) it does not wait for requests stuck in the
// device and reports true if any queue was still running.
func (s *session) teardown(wait bool) (abandoned bool) {
	for _, v := range s.vrings {
		s.stop(v, wait)
		if v.kick != nil {
			v.kick.Close()
			v.kick = nil
		}
		if v.errFd != nil {
			v.errFd.Close()
			v.errFd = nil
		}
		v.setCall(nil)
	}
	if s.backendReq != nil {
		s.backendReq.Close()
		s.backendReq = nil
	}
	s.mem.Close()
	return s.abandoned
}
