package testdriver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// Sequence picks whose vhost-user conversation the driver replays.
type Sequence int

const (
	// QEMU replays QEMU 7.2's vhost-user-fs conversation: GET/SET protocol
	// features first, SET_BACKEND_REQ_FD if offered, SET_VRING_CALL/ERR
	// early, memory via ADD_MEM_REG (NEED_REPLY) when CONFIGURE_MEM_SLOTS
	// is offered, else SET_MEM_TABLE; per queue NUM, BASE, ADDR, KICK; then
	// SET_VRING_ENABLE and fresh SET_VRING_CALLs. Only the messages QEMU
	// flags with NEED_REPLY ask for acks.
	QEMU Sequence = iota
	// CloudHypervisor replays cloud-hypervisor's: SET_OWNER, features,
	// protocol features, then NEED_REPLY on every message, memory always
	// via SET_MEM_TABLE, per queue NUM, ADDR, BASE, CALL, KICK, ENABLE.
	CloudHypervisor
)

func (s Sequence) String() string {
	if s == CloudHypervisor {
		return "cloud-hypervisor"
	}
	return "qemu"
}

// Options configure a Driver. The zero value is usable.
type Options struct {
	Sequence Sequence
	// RequestQueues is the number of request queues (default 1); the
	// driver sets up 1+RequestQueues rings, hiprio first.
	RequestQueues int
	// QueueSize is the ring size of every queue (default 256).
	QueueSize int
	// MemRegions are the sizes of the guest RAM regions, laid out back to
	// back from guest-physical 0 (default one region of 32 MiB). Rings live
	// in the first region.
	MemRegions []uint64
	// NoEventIdx leaves VIRTIO_F_RING_EVENT_IDX unacked.
	NoEventIdx bool
	// Timeout bounds every wait for the daemon (default 5 s).
	Timeout time.Duration
	// StartIndex is where every ring's available and used indexes start
	// (SET_VRING_BASE): a value just below 65536 makes the 16-bit indexes
	// wrap within a few requests.
	StartIndex uint16
	// HaltPoll is how long a request's Wait keeps looking at the used
	// ring itself before it sleeps until the reaper, woken by the call
	// eventfd, completes the request (0: it sleeps at once). It models
	// KVM's halt polling (halt_poll_ns, 200 µs by default on x86): a vCPU
	// that goes idle waiting for a request spins that long before its
	// thread sleeps, so a completion that arrives meanwhile reaches the
	// guest without a host scheduler wake-up. The daemon is signalled for
	// every completion all the same.
	HaltPoll time.Duration
}

func (o Options) withDefaults() Options {
	if o.RequestQueues <= 0 {
		o.RequestQueues = 1
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 256
	}
	if len(o.MemRegions) == 0 {
		o.MemRegions = []uint64{32 << 20}
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	return o
}

// Features QEMU 7.2 understands for vhost-user-fs (transport bits) and the
// protocol features it supports; cloud-hypervisor's protocol features.
const (
	qemuFeatures = vhostuser.FeatureVersion1 | vhostuser.FeatureRingIndirectDesc |
		vhostuser.FeatureRingEventIdx | vhostuser.FeatureProtocolFeatures
	qemuProtocol = 0x8c2b // MQ LOG_SHMFD REPLY_ACK BACKEND_REQ BACKEND_SEND_FD HOST_NOTIFIER CONFIGURE_MEM_SLOTS
	clhProtocol  = vhostuser.ProtocolMQ | vhostuser.ProtocolConfigureMemSlots | vhostuser.ProtocolReplyAck |
		vhostuser.ProtocolLogShmfd | 1<<12 | 1<<19 // + INFLIGHT_SHMFD, DEVICE_STATE
)

// Driver is an in-process vhost-user frontend and guest driver.
type Driver struct {
	path string
	opts Options
	// haltPolled counts the requests a halt-polling Wait completed by
	// collecting the used ring itself (Options.HaltPoll).
	haltPolled atomic.Int64
	conn       *vhostuser.Conn
	ram        *guestRAM
	heap       *heap
	queues     []*queue
	features   uint64 // acked virtio features
	protocol   uint64 // acked protocol features
	needAll    bool   // NEED_REPLY on every message (cloud-hypervisor with REPLY_ACK)
	// Offered are what the daemon offered.
	OfferedFeatures, OfferedProtocol uint64
	// QueueNum is what GET_QUEUE_NUM answered (0 without MQ).
	QueueNum uint64
	backend  *os.File // our end of SET_BACKEND_REQ_FD
}

// Connect dials the daemon's socket, creates guest RAM and rings, and
// negotiates in opts.Sequence's order. The rings are running when it
// returns.
func Connect(path string, opts Options) (*Driver, error) {
	opts = opts.withDefaults()
	d := &Driver{path: path, opts: opts}
	var err error
	if d.ram, err = newGuestRAM(opts.MemRegions); err != nil {
		return nil, err
	}
	ringEnd, err := d.layoutQueues()
	if err != nil {
		d.ram.close()
		return nil, err
	}
	d.heap = newHeap(ringEnd, d.ram.end)
	if err := d.dial(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.negotiate(); err != nil {
		d.Close()
		return nil, fmt.Errorf("%v negotiation: %w", opts.Sequence, err)
	}
	return d, nil
}

func (d *Driver) dial() error {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: d.path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("dial %s: %w", d.path, err)
	}
	d.conn = vhostuser.NewConn(c)
	return nil
}

// HaltPolled returns how many requests a halt-polling Wait completed by
// collecting the used ring itself (Options.HaltPoll): the rest were
// completed by the reaper the call eventfd woke.
func (d *Driver) HaltPolled() int64 { return d.haltPolled.Load() }

// Close disconnects and frees guest RAM. Requests still pending fail.
func (d *Driver) Close() error {
	var err error
	if d.conn != nil {
		err = d.conn.Close()
	}
	for _, q := range d.queues {
		q.close(errors.New("driver closed"))
	}
	if d.backend != nil {
		d.backend.Close()
	}
	// Let the reapers see their call fds closed before RAM goes away.
	for _, q := range d.queues {
		q.waitReaper()
		q.kick.Close()
		q.call.Close()
	}
	if d.ram != nil {
		d.ram.close()
	}
	return err
}

// Disconnect closes the socket only, leaving guest RAM and rings as they
// are, like a frontend that crashed; Reconnect picks up from there.
func (d *Driver) Disconnect() error {
	return d.conn.Close()
}

// Reconnect dials again and renegotiates with the same RAM and rings,
// each ring resuming at its current available index. Requests that were
// in flight are failed.
func (d *Driver) Reconnect() error {
	d.conn.Close()
	for _, q := range d.queues {
		q.close(errors.New("reconnecting"))
		q.waitReaper()
		q.resetForReconnect()
	}
	if err := d.dial(); err != nil {
		return err
	}
	return d.negotiate()
}

// send sends one message; with ack it waits for the REPLY_ACK status.
func (d *Driver) send(req uint32, payload []byte, fds []int, needReply bool) error {
	flags := uint32(vhostuser.FlagVersion)
	ack := needReply && d.protocol&vhostuser.ProtocolReplyAck != 0
	if ack || (d.needAll && d.protocol&vhostuser.ProtocolReplyAck != 0) {
		flags |= vhostuser.FlagNeedReply
		ack = true
	}
	if err := d.conn.Send(req, flags, payload, fds); err != nil {
		return err
	}
	if !ack {
		return nil
	}
	v, err := d.recvU64(req)
	if err != nil {
		return err
	}
	if v != 0 {
		return fmt.Errorf("%s: daemon answered failure %d", vhostuser.RequestName(req), v)
	}
	return nil
}

// get sends a request with a natural reply and returns the reply payload.
func (d *Driver) get(req uint32, payload []byte) ([]byte, error) {
	flags := uint32(vhostuser.FlagVersion)
	if d.needAll && d.protocol&vhostuser.ProtocolReplyAck != 0 {
		flags |= vhostuser.FlagNeedReply
	}
	if err := d.conn.Send(req, flags, payload, nil); err != nil {
		return nil, err
	}
	return d.recv(req)
}

func (d *Driver) recv(req uint32) ([]byte, error) {
	m, err := d.Recv()
	if err != nil {
		return nil, fmt.Errorf("%s reply: %w", vhostuser.RequestName(req), err)
	}
	m.CloseFds()
	if m.Request != req || m.Flags&vhostuser.FlagReply == 0 {
		return nil, fmt.Errorf("%s: got reply to %s with flags %#x", vhostuser.RequestName(req), vhostuser.RequestName(m.Request), m.Flags)
	}
	return m.Payload, nil
}

func (d *Driver) recvU64(req uint32) (uint64, error) {
	p, err := d.recv(req)
	if err != nil {
		return 0, err
	}
	return vhostuser.ParseU64(req, p)
}

func (d *Driver) getU64(req uint32) (uint64, error) {
	p, err := d.get(req, nil)
	if err != nil {
		return 0, err
	}
	return vhostuser.ParseU64(req, p)
}

func u64(v uint64) []byte { return vhostuser.AppendU64(nil, v) }

func (d *Driver) state(req uint32, idx int, num uint32) error {
	return d.send(req, vhostuser.AppendVringState(nil, vhostuser.VringState{Index: uint32(idx), Num: num}), nil, false)
}

func (d *Driver) ackFeatures() uint64 {
	want := uint64(qemuFeatures)
	if d.opts.NoEventIdx {
		want &^= vhostuser.FeatureRingEventIdx
	}
	return d.OfferedFeatures & want
}

func (d *Driver) negotiate() error {
	d.protocol, d.needAll = 0, false
	if d.opts.Sequence == CloudHypervisor {
		return d.negotiateCLH()
	}
	return d.negotiateQEMU()
}

func (d *Driver) negotiateProtocol(supported uint64) error {
	var err error
	if d.OfferedFeatures&vhostuser.FeatureProtocolFeatures == 0 {
		return errors.New("daemon does not offer VHOST_USER_F_PROTOCOL_FEATURES")
	}
	if d.OfferedProtocol, err = d.getU64(vhostuser.ReqGetProtocolFeatures); err != nil {
		return err
	}
	ack := d.OfferedProtocol & supported
	if err := d.send(vhostuser.ReqSetProtocolFeatures, u64(ack), nil, false); err != nil {
		return err
	}
	d.protocol = ack
	if ack&vhostuser.ProtocolMQ != 0 {
		d.needAll = d.opts.Sequence == CloudHypervisor
		if d.QueueNum, err = d.getU64(vhostuser.ReqGetQueueNum); err != nil {
			return err
		}
		if d.QueueNum < uint64(len(d.queues)) {
			return fmt.Errorf("daemon has %d queues, want %d", d.QueueNum, len(d.queues))
		}
	}
	d.needAll = d.opts.Sequence == CloudHypervisor
	return nil
}

func (d *Driver) negotiateQEMU() error {
	var err error
	if d.OfferedFeatures, err = d.getU64(vhostuser.ReqGetFeatures); err != nil {
		return err
	}
	if err := d.negotiateProtocol(qemuProtocol); err != nil {
		return err
	}
	if d.protocol&vhostuser.ProtocolConfigureMemSlots != 0 {
		if _, err := d.getU64(vhostuser.ReqGetMaxMemSlots); err != nil {
			return err
		}
	}
	if d.protocol&vhostuser.ProtocolBackendReq != 0 {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		d.backend = os.NewFile(uintptr(fds[0]), "backend-req")
		err = d.send(vhostuser.ReqSetBackendReqFd, nil, fds[1:], true)
		unix.Close(fds[1])
		if err != nil {
			return err
		}
	}
	if err := d.send(vhostuser.ReqSetOwner, nil, nil, false); err != nil {
		return err
	}
	if _, err := d.getU64(vhostuser.ReqGetFeatures); err != nil {
		return err
	}
	// Device realize: placeholder call and err eventfds.
	for _, req := range []uint32{vhostuser.ReqSetVringCall, vhostuser.ReqSetVringErr} {
		for i := range d.queues {
			if err := d.sendEventfd(req, i); err != nil {
				return err
			}
		}
	}
	// Guest driver start.
	for i := range d.queues {
		if err := d.sendEventfd(vhostuser.ReqSetVringCall, i); err != nil {
			return err
		}
	}
	d.features = d.ackFeatures()
	if err := d.send(vhostuser.ReqSetFeatures, u64(d.features), nil, false); err != nil {
		return err
	}
	if d.protocol&vhostuser.ProtocolConfigureMemSlots != 0 {
		for _, r := range d.ram.regions {
			if err := d.addMemReg(r); err != nil {
				return err
			}
		}
	} else if err := d.setMemTable(); err != nil {
		return err
	}
	for i, q := range d.queues {
		if err := d.state(vhostuser.ReqSetVringNum, i, uint32(q.size)); err != nil {
			return err
		}
		if err := d.state(vhostuser.ReqSetVringBase, i, uint32(q.availIdx)); err != nil {
			return err
		}
		if err := d.setVringAddr(i); err != nil {
			return err
		}
		if err := d.sendKick(i); err != nil {
			return err
		}
	}
	for i := range d.queues {
		if err := d.state(vhostuser.ReqSetVringEnable, i, 1); err != nil {
			return err
		}
	}
	for i, q := range d.queues {
		if err := d.sendCall(i, q); err != nil {
			return err
		}
	}
	return nil
}

func (d *Driver) negotiateCLH() error {
	var err error
	if err := d.send(vhostuser.ReqSetOwner, nil, nil, false); err != nil {
		return err
	}
	if d.OfferedFeatures, err = d.getU64(vhostuser.ReqGetFeatures); err != nil {
		return err
	}
	d.features = d.ackFeatures()
	if err := d.send(vhostuser.ReqSetFeatures, u64(d.features), nil, false); err != nil {
		return err
	}
	if err := d.negotiateProtocol(clhProtocol); err != nil {
		return err
	}
	if err := d.send(vhostuser.ReqSetFeatures, u64(d.features), nil, false); err != nil {
		return err
	}
	if err := d.setMemTable(); err != nil {
		return err
	}
	for i, q := range d.queues {
		if err := d.state(vhostuser.ReqSetVringNum, i, uint32(q.size)); err != nil {
			return err
		}
		if err := d.setVringAddr(i); err != nil {
			return err
		}
		if err := d.state(vhostuser.ReqSetVringBase, i, uint32(q.availIdx)); err != nil {
			return err
		}
		if err := d.sendCall(i, q); err != nil {
			return err
		}
		if err := d.sendKick(i); err != nil {
			return err
		}
	}
	for i := range d.queues {
		if err := d.state(vhostuser.ReqSetVringEnable, i, 1); err != nil {
			return err
		}
	}
	return nil
}

func (d *Driver) regionMsg(r *memRegion) vhostuser.MemRegion {
	return vhostuser.MemRegion{GuestPhys: r.gpa, Size: uint64(len(r.data)), UserAddr: r.uva()}
}

func (d *Driver) setMemTable() error {
	var rs []vhostuser.MemRegion
	var fds []int
	for _, r := range d.ram.regions {
		rs = append(rs, d.regionMsg(r))
		fds = append(fds, r.fd)
	}
	return d.send(vhostuser.ReqSetMemTable, vhostuser.AppendMemTable(nil, rs), fds, true)
}

// addMemReg sends ADD_MEM_REG for r (QEMU asks for a reply).
func (d *Driver) addMemReg(r *memRegion) error {
	return d.send(vhostuser.ReqAddMemReg, vhostuser.AppendSingleRegion(nil, d.regionMsg(r)), []int{r.fd}, true)
}

// RemoveLastRegion sends REM_MEM_REG for the last RAM region (the driver
// keeps it mapped; the daemon must stop translating into it).
func (d *Driver) RemoveLastRegion() error {
	r := d.ram.regions[len(d.ram.regions)-1]
	return d.send(vhostuser.ReqRemMemReg, vhostuser.AppendSingleRegion(nil, d.regionMsg(r)), []int{r.fd}, true)
}

// AddLastRegion sends ADD_MEM_REG for the last RAM region again.
func (d *Driver) AddLastRegion() error {
	return d.addMemReg(d.ram.regions[len(d.ram.regions)-1])
}

func (d *Driver) setVringAddr(i int) error {
	q := d.queues[i]
	a := vhostuser.VringAddr{Index: uint32(i), Desc: q.uva(q.descGPA), Used: q.uva(q.usedGPA), Avail: q.uva(q.availGPA)}
	return d.send(vhostuser.ReqSetVringAddr, vhostuser.AppendVringAddr(nil, a), nil, false)
}

func eventfd() (*os.File, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return os.NewFile(uintptr(fd), "eventfd"), nil
}

// sendEventfd sends a throwaway eventfd (QEMU's placeholders).
func (d *Driver) sendEventfd(req uint32, i int) error {
	f, err := eventfd()
	if err != nil {
		return err
	}
	defer f.Close()
	return d.send(req, u64(uint64(i)), []int{int(f.Fd())}, false)
}

func (d *Driver) sendKick(i int) error {
	return d.send(vhostuser.ReqSetVringKick, u64(uint64(i)), []int{int(d.queues[i].kick.Fd())}, false)
}

func (d *Driver) sendCall(i int, q *queue) error {
	if err := d.send(vhostuser.ReqSetVringCall, u64(uint64(i)), []int{int(q.call.Fd())}, false); err != nil {
		return err
	}
	q.startReaper()
	return nil
}

// StopQueue stops ring i as the frontend does at VM stop:
// SET_VRING_ENABLE(0) then GET_VRING_BASE, returning the daemon's index.
func (d *Driver) StopQueue(i int) (uint16, error) {
	if err := d.state(vhostuser.ReqSetVringEnable, i, 0); err != nil {
		return 0, err
	}
	return d.GetVringBase(i)
}

// GetVringBase sends GET_VRING_BASE for ring i.
func (d *Driver) GetVringBase(i int) (uint16, error) {
	p, err := d.get(vhostuser.ReqGetVringBase, vhostuser.AppendVringState(nil, vhostuser.VringState{Index: uint32(i)}))
	if err != nil {
		return 0, err
	}
	st, err := vhostuser.ParseVringState(vhostuser.ReqGetVringBase, p)
	if err != nil {
		return 0, err
	}
	if st.Index != uint32(i) || st.Num > 0xffff {
		return 0, fmt.Errorf("GET_VRING_BASE reply %+v for queue %d", st, i)
	}
	return uint16(st.Num), nil
}

// StartQueue restarts ring i after StopQueue: SET_VRING_BASE(base),
// SET_VRING_KICK, SET_VRING_ENABLE(1).
func (d *Driver) StartQueue(i int, base uint16) error {
	if err := d.state(vhostuser.ReqSetVringBase, i, uint32(base)); err != nil {
		return err
	}
	if err := d.sendKick(i); err != nil {
		return err
	}
	return d.state(vhostuser.ReqSetVringEnable, i, 1)
}

// SendRaw sends an arbitrary message (tests of malformed input).
func (d *Driver) SendRaw(req, flags uint32, payload []byte, fds []int) error {
	return d.conn.Send(req, flags, payload, fds)
}

// Recv reads the next message from the daemon, waiting at most the
// driver's timeout. io.EOF means the daemon closed the session.
func (d *Driver) Recv() (vhostuser.Message, error) {
	type result struct {
		m   vhostuser.Message
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := d.conn.Recv()
		if err == nil {
			m.Payload = append([]byte(nil), m.Payload...)
		}
		ch <- result{m, err}
	}()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(d.opts.Timeout):
		d.conn.Close()
		return vhostuser.Message{}, errors.New("no message within the timeout")
	}
}

// Features returns the acked virtio features; Protocol the acked protocol
// features.
func (d *Driver) Features() uint64 { return d.features }

// Protocol returns the acked protocol features.
func (d *Driver) Protocol() uint64 { return d.protocol }

// NumQueues returns the number of rings, hiprio included.
func (d *Driver) NumQueues() int { return len(d.queues) }

// RAMEnd is the first guest-physical address past guest RAM.
func (d *Driver) RAMEnd() uint64 { return d.ram.end }

// RegionStart returns the guest-physical address of RAM region i.
func (d *Driver) RegionStart(i int) uint64 { return d.ram.regions[i].gpa }

// Alloc reserves n bytes of guest RAM and returns their address.
func (d *Driver) Alloc(n int) (uint64, error) {
	gpa, ok := d.heap.alloc(uint64(n))
	if !ok {
		return 0, fmt.Errorf("guest RAM exhausted allocating %d bytes", n)
	}
	return gpa, nil
}

// Free returns memory from Alloc.
func (d *Driver) Free(gpa uint64, n int) { d.heap.release(gpa, uint64(n)) }

// WriteGuest copies b into guest RAM at gpa.
func (d *Driver) WriteGuest(gpa uint64, b []byte) { d.ram.write(gpa, b) }

// ReadGuest copies guest RAM at gpa into dst.
func (d *Driver) ReadGuest(dst []byte, gpa uint64) { d.ram.read(dst, gpa) }

// MaskCall does what QEMU does when the guest masks and then unmasks the
// MSI-X vector of queue i: SET_VRING_CALL with a private "masked" eventfd,
// hold pause, SET_VRING_CALL with the real call eventfd again, and then,
// if the masked eventfd was signalled meanwhile, signal the real one (the
// pending-bit check QEMU makes after unmasking). The messages are not
// acknowledged, as QEMU's are not: the daemon applies them whenever it gets
// to them, concurrently with its queue workers.
func (d *Driver) MaskCall(i int, pause time.Duration) error {
	q, err := d.queue(i)
	if err != nil {
		return err
	}
	masked, err := eventfd()
	if err != nil {
		return err
	}
	defer masked.Close()
	if err := d.send(vhostuser.ReqSetVringCall, u64(uint64(i)), []int{int(masked.Fd())}, false); err != nil {
		return err
	}
	time.Sleep(pause)
	if err := d.send(vhostuser.ReqSetVringCall, u64(uint64(i)), []int{int(q.call.Fd())}, false); err != nil {
		return err
	}
	var buf [8]byte
	if n, err := unix.Read(int(masked.Fd()), buf[:]); err == nil && n == 8 {
		if _, err := unix.Write(int(q.call.Fd()), q.kickVal[:]); err != nil {
			return fmt.Errorf("forwarding a masked signal: %w", err)
		}
	}
	return nil
}
