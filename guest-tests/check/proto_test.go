package check

import (
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		line    string
		step    string
		ok      bool
		rc      int
		end     bool
		wantErr bool
	}{
		{line: "plain console output"},
		{line: "@@HARNESS READY uptime=1.0"},
		{line: `@@RESULT {"step":"tree","kind":"manifest","ok":true}` + "\r", step: "tree", ok: true},
		{line: `@@RESULT {"step":"x","ok":false,"errors":["a"]}`, step: "x"},
		{line: `@@RESULT {"step":`, wantErr: true},
		{line: "@@END rc=0", end: true},
		{line: "@@END rc=5", end: true, rc: 5},
		{line: "@@END rc=x", wantErr: true},
	}
	for _, tt := range tests {
		r, rc, end, err := ParseLine(tt.line)
		if (err != nil) != tt.wantErr {
			t.Fatalf("%q: err %v", tt.line, err)
		}
		if end != tt.end || rc != tt.rc {
			t.Fatalf("%q: end %v rc %d", tt.line, end, rc)
		}
		if tt.step != "" && (r == nil || r.Step != tt.step || r.OK != tt.ok) {
			t.Fatalf("%q: result %+v", tt.line, r)
		}
		if tt.step == "" && r != nil {
			t.Fatalf("%q: unexpected result %+v", tt.line, r)
		}
	}
}

func TestErrsBounded(t *testing.T) {
	var e Errs
	for i := 0; i < MaxErrors+5; i++ {
		e.Addf("e%d", i)
	}
	s := e.Strings()
	if len(s) != MaxErrors+1 || !strings.Contains(s[MaxErrors], "5 more") {
		t.Fatalf("got %d lines, last %q", len(s), s[len(s)-1])
	}
}

// FuzzParseLine: the console lines come from the guest, so parsing them
// must never panic, and a result line must round-trip its step name.
func FuzzParseLine(f *testing.F) {
	f.Add(`@@RESULT {"step":"tree","kind":"manifest","ok":true,"metrics":{"secs":1.5}}`)
	f.Add("@@END rc=0")
	f.Add("@@HARNESS MOUNTED tag=nvfs uptime=2.0")
	f.Add("@@END rc=-99999999999999999999")
	f.Fuzz(func(t *testing.T, line string) {
		r, _, end, err := ParseLine(line)
		if err != nil && (r != nil || end) {
			t.Fatalf("error with a value: %v %+v %v", err, r, end)
		}
		if r != nil && !strings.HasPrefix(line, MarkResult) {
			t.Fatalf("result from a non-result line %q", line)
		}
	})
}
