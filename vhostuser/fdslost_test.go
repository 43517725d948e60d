package vhostuser

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// A message whose fds the kernel could not install (the process was out of
// fds) fails that message, and for a kick stops that ring, but never ends
// the session.
func TestFdsLostFailsTheMessageNotTheSession(t *testing.T) {
	front, back := socketPair(t)
	defer front.Close()
	defer back.Close()
	go io.Copy(io.Discard, front)
	log := logrus.New()
	log.SetOutput(io.Discard)
	opts := Options{Logger: logrus.NewEntry(log), StopTimeout: time.Second}.withDefaults(nopDevice{})
	s := newSession(context.Background(), context.Background(), NewConn(back), nopDevice{}, opts)
	defer s.teardown(true)
	s.protocol = ProtocolReplyAck
	for _, tc := range []struct {
		name  string
		req   uint32
		flags uint32
		fail  bool
	}{
		{"kick", ReqSetVringKick, FlagVersion, false},
		{"kick, reply asked", ReqSetVringKick, FlagVersion | FlagNeedReply, false},
		{"call", ReqSetVringCall, FlagVersion, false},
		{"err", ReqSetVringErr, FlagVersion | FlagNeedReply, false},
		{"mem table", ReqSetMemTable, FlagVersion | FlagNeedReply, false},
		{"add region", ReqAddMemReg, FlagVersion | FlagNeedReply, false},
		{"mem table without reply ack asked", ReqSetMemTable, FlagVersion, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := Message{Header: Header{Request: tc.req, Flags: tc.flags, Size: 8}, Payload: AppendU64(nil, 1), FdsLost: true}
			err := s.dispatch(&m)
			if (err != nil) != tc.fail {
				t.Fatalf("dispatch: %v, want failure %v", err, tc.fail)
			}
			if s.vrings[1].kick != nil || s.vrings[1].run != nil {
				t.Fatal("ring 1 has a kick fd or runs")
			}
		})
	}
}
