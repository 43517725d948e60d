package guesttests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

// TestQEMUOneCPUElidesGuestBarriers checks, on the QEMU the guest tests
// boot, the fact docs/notifications.md ("Where the notifications go
// missing") rests on: under TCG with one possible vCPU (-smp 1), a guest's
// full barriers are translated into no host barrier at all (mfence: no
// "mb" op; lock-prefixed add and xchg: a plain load and store, not a host
// atomic), while with -smp 1,maxcpus=2 they are kept. A vhost-user device
// reads and writes guest memory from its own host threads, so on a
// one-vCPU TCG guest the Dekker pairs of the virtio ring (store an event
// index, barrier, load the other side's index) can lose a kick or a
// used-buffer signal. The check reads QEMU's own translation log (-d op)
// of a seven-instruction multiboot kernel (testdata/tcgbarrier.S).
//
// If this fails because a newer QEMU keeps the barriers with one vCPU (the
// upstream fix of 2023), the explanation no longer applies to that QEMU:
// update docs/notifications.md.
func TestQEMUOneCPUElidesGuestBarriers(t *testing.T) {
	for _, tool := range []string{QEMU, "as", "ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skipf(t, "%s not found: %v", tool, err)
		}
	}
	dir := t.TempDir()
	obj, elf := filepath.Join(dir, "k.o"), filepath.Join(dir, "k.elf")
	for _, args := range [][]string{
		{"as", "--32", "testdata/tcgbarrier.S", "-o", obj},
		{"ld", "-m", "elf_i386", "-Ttext=0x100000", obj, "-o", elf},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	type forms struct{ mfence, lockAdd, xchg bool } // true: the barrier is kept
	for _, tc := range []struct {
		smp  string
		want forms
	}{
		{"1", forms{}},
		{"1,maxcpus=2", forms{true, true, true}},
	} {
		t.Run("smp="+tc.smp, func(t *testing.T) {
			got := translate(t, elf, tc.smp)
			if got != tc.want {
				t.Fatalf("-smp %s: barriers kept (mfence, lock add, xchg) = %+v, want %+v", tc.smp, got, tc.want)
			}
		})
	}
}

// translate boots elf under TCG with -smp smp and reports which of the
// kernel's three barrier instructions became a host barrier or atomic in
// QEMU's intermediate code.
func translate(t *testing.T, elf, smp string) (kept struct{ mfence, lockAdd, xchg bool }) {
	t.Helper()
	logf := filepath.Join(t.TempDir(), "tcg.log")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, QEMU, "-machine", "pc,accel=tcg", "-smp", smp, "-m", "64",
		"-kernel", elf, "-display", "none", "-monitor", "none", "-serial", "none", "-no-reboot",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=1",
		"-d", "in_asm,op,nochain", "-dfilter", "0x100000+0x100", "-D", logf)
	out, err := cmd.CombinedOutput()
	// isa-debug-exit makes QEMU exit with (value<<1)|1.
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode()%2 != 1) {
		t.Fatalf("qemu -smp %s: %v\n%s", smp, err, out)
	}
	b, err := os.ReadFile(logf)
	if err != nil {
		t.Fatal(err)
	}
	// The OP section has one group per guest instruction, each opened by a
	// "----" line, in the order of the IN: listing.
	_, ops, ok := strings.Cut(string(b), "\nOP:\n")
	if !ok {
		t.Fatalf("no OP section in QEMU's log:\n%s", b)
	}
	groups := strings.Split(ops, "\n ---- ")[1:]
	// _start: mov esp; movl; mfence; movl; lock addl; xchgl; outb; hlt.
	if len(groups) < 6 {
		t.Fatalf("%d instruction groups in QEMU's log, want at least 6:\n%s", len(groups), ops)
	}
	kept.mfence = strings.Contains(groups[2], " mb ")
	kept.lockAdd = strings.Contains(groups[4], "call atomic_")
	kept.xchg = strings.Contains(groups[5], "call atomic_")
	for i, name := range []string{2: "mfence", 4: "lock addl", 5: "xchgl"} {
		if name != "" {
			t.Logf("-smp %s, %s:\n ---- %s", smp, name, strings.TrimSpace(groups[i]))
		}
	}
	return kept
}
