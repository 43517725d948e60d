package vhostuser_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// TestFaultInjectorStoreLoadReorderedGuest reproduces the notifications
// lost in the guest soak (docs/notifications.md): a guest whose full
// barrier between storing its event index and loading the device's ring
// index does not hold (QEMU 7.2 TCG with one vCPU elides it, and the host
// CPU lets the load pass the store). Then the guest and the daemon each
// read the other's old value and neither notifies:
//
//   - rearm: the guest re-arms interrupts (used_event = its last used
//     index) after reaping, but its load of the used index runs before
//     that store is visible; a completion pushed in between reads the
//     "callbacks off" used_event 0 and does not signal. The guest sleeps
//     with an entry in its used ring: the soak's "the guest has not
//     reaped every used entry".
//   - kick: the guest publishes a chain while the leader is about to
//     re-arm kicks; its load of avail_event runs before its store of the
//     available index is visible, the leader's re-check after re-arming
//     sees the old index: no kick, an unseen chain ("found a chain
//     published without a kick").
//
// With the idle check each completes about Options.IdleCheck later and the
// recovery is logged with the queue's trace; without it (as before the
// fix) the request is never answered. The daemon's own side of each
// exchange (store, full fence, load) is correct in both cases: the loss
// needs the guest's barrier to fail.
func TestFaultInjectorStoreLoadReorderedGuest(t *testing.T) {
	for _, tc := range []struct {
		name, log, verdict string
	}{
		{"rearm", "not reaped every used entry", "guest-rearm-reordered"},
		{"kick", "published without a kick", "kick-missing"},
	} {
		for _, idle := range []bool{true, false} {
			name := tc.name + "/idle-check"
			if !idle {
				name = tc.name + "/no-idle-check-hangs"
			}
			t.Run(name, func(t *testing.T) { storeLoadReordered(t, tc.name, tc.log, tc.verdict, idle) })
		}
	}
}

func storeLoadReordered(t *testing.T, which, wantLog, wantVerdict string, idle bool) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	hook := logtest.NewLocal(l)
	opts := vhostuser.Options{RequestQueues: 1, IdleCheck: 200 * time.Millisecond, Logger: logrus.NewEntry(l)}
	if !idle {
		opts.IdleCheck = -1
	}
	timeout := 2 * time.Second
	if which == "kick" {
		// Keeps the leader's kicks suppressed (avail_event behind) for a
		// while after it drained the ring, so that the next chain is
		// published inside the window rather than by luck. The idle
		// bound is longer than the whole exchange, so that no idle wake
		// (and the poll after it) comes in between: a chain published
		// while the leader polls leaves its kick unread in the eventfd,
		// which would end the leader's next wait at once.
		opts.PollBeforeSleep = 250 * time.Millisecond
		if idle {
			opts.IdleCheck = 3 * time.Second
		}
		timeout = 5 * time.Second
	}
	s := startServer(t, opts)
	d := connect(t, s, testdriver.Options{RequestQueues: 1, QueueSize: 8, Timeout: timeout})
	for i := 0; i < 10; i++ { // the indexes leave 0 behind (crossing 0 signals)
		if _, err := d.Submit(1, [][]byte{[]byte("warm")}, []int{32}, testdriver.Layout{}); err != nil {
			t.Fatal(err)
		}
	}
	// Idle: kicks and interrupts armed, and no kick left unread in the
	// eventfd (a kick sent while the leader polled is read after its next
	// re-arm, and would end that wait at once).
	time.Sleep(400*time.Millisecond + 2*opts.PollBeforeSleep)
	var late *testdriver.Pending
	start := time.Now()
	switch which {
	case "rearm":
		// A completes first; while the guest re-arms after reaping it,
		// D (answered 40 ms later) is pushed.
		d.InjectStoreLoadReorder(1, 0, 1)
		var err error
		if late, err = d.Start(1, [][]byte{[]byte("D-late")}, []int{32}, testdriver.Layout{}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Submit(1, [][]byte{[]byte("A")}, []int{32}, testdriver.Layout{}); err != nil {
			t.Fatal(err)
		}
	case "kick":
		// The leader pops A and polls its empty ring; A's answer comes
		// back and the next chain is published while it polls.
		if _, err := d.Submit(1, [][]byte{[]byte("A")}, []int{32}, testdriver.Layout{}); err != nil {
			t.Fatal(err)
		}
		d.InjectStoreLoadReorder(1, 1, 0)
		var err error
		if late, err = d.Start(1, [][]byte{[]byte("B-late")}, []int{32}, testdriver.Layout{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := late.Wait()
	took := time.Since(start)
	if !idle {
		if err == nil {
			t.Fatalf("the request was answered (in %v) without the idle check: the reordering did not lose a notification", took)
		}
		t.Logf("without the idle check the request is lost: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("request after a reordered %s: %v", which, err)
	}
	t.Logf("recovered in %v", took)
	if took < 100*time.Millisecond {
		t.Errorf("answered in %v: the notification was not lost, the test shows nothing", took)
	}
	found := false
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, wantLog) {
			found = true
			tr, _ := e.Data["trace"].(string)
			verdict, _ := e.Data["verdict"].(string)
			if !strings.Contains(tr, "state: ") {
				t.Errorf("recovery logged without the queue's trace: %v", e.Data)
			}
			if !strings.HasPrefix(verdict+tr, wantVerdict) {
				t.Errorf("verdict %q, trace starting %.80q; want the verdict %q", verdict, tr, wantVerdict)
			}
			t.Logf("%s %s\n%s", e.Message, verdict, tr)
		}
	}
	if !found {
		for _, e := range hook.AllEntries() {
			t.Logf("%s %v", e.Message, e.Data)
		}
		t.Errorf("no log line with %q", wantLog)
	}
	if _, err := d.Submit(1, [][]byte{[]byte("after")}, []int{32}, testdriver.Layout{}); err != nil {
		t.Fatal(err)
	}
}
