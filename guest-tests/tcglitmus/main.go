// Command tcglitmus is PID 1 of a guest that runs the guest half of a
// store-buffering litmus test against a host process, through the shared
// memory of an ivshmem-plain device (BAR 2). Each round the host publishes
// a round number; the guest then stores x = 1 with an instruction that is
// a full barrier on real hardware (XCHG), loads y and reports what it read.
// The host stores y = 1 (XCHG) and loads x. If both barriers hold, at least
// one side sees the other's store; "both read 0" means one side's load ran
// before its own earlier store was visible. TestTCGOneVCPUGuestBarriers
// runs it (docs/notifications.md: why the guest's barriers matter to the
// daemon). The layout of the shared page is litmusWord* in the test.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Word indexes in the shared page (each variable on its own cache line).
const (
	wordRound = 0  // host: the round to run; ^0: stop
	wordAck   = 1  // guest: the last round done
	wordReady = 2  // guest: readyMagic once mapped
	wordX     = 16 // stored by the guest
	wordY     = 32 // stored by the host
	wordSeen  = 48 // guest: the y it read
)

const readyMagic = 0x600d

func main() {
	defer syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	if err := run(); err != nil {
		fmt.Println("LITMUS error:", err)
	}
}

func run() error {
	if err := syscall.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("mount sysfs: %w", err)
	}
	devs, _ := filepath.Glob("/sys/bus/pci/devices/*")
	dev := ""
	for _, d := range devs {
		v, _ := os.ReadFile(d + "/vendor")
		id, _ := os.ReadFile(d + "/device")
		if strings.TrimSpace(string(v)) == "0x1af4" && strings.TrimSpace(string(id)) == "0x1110" {
			dev = d
		}
	}
	if dev == "" {
		return fmt.Errorf("no ivshmem device")
	}
	_ = os.WriteFile(dev+"/enable", []byte("1"), 0)
	f, err := os.OpenFile(dev+"/resource2", os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return err
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap BAR 2: %w", err)
	}
	w := func(i int) *uint32 { return (*uint32)(unsafe.Pointer(&mem[4*i])) }
	round, ack, x, y, seen := w(wordRound), w(wordAck), w(wordX), w(wordY), w(wordSeen)
	atomic.StoreUint32(w(wordReady), readyMagic)
	n := 0
	for i := uint32(1); ; i++ {
		s := atomic.LoadUint32(round)
		for s != i && s != ^uint32(0) {
			s = atomic.LoadUint32(round)
		}
		if s == ^uint32(0) {
			break
		}
		atomic.StoreUint32(x, 1) // XCHG
		atomic.StoreUint32(seen, atomic.LoadUint32(y))
		atomic.StoreUint32(ack, i)
		n++
	}
	fmt.Println("LITMUS guest rounds", n)
	return nil
}
