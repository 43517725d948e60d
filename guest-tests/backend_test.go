package guesttests

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

func TestTemplate(t *testing.T) {
	argv := []string{"/bin/daemon", "--socket-path={socket}", "--shared-dir={share}", "--cache={cache}",
		"{xattr:--xattr}", "{threads:--thread-pool-size=}", "--bootstrap={bootstrap}"}
	tests := []struct {
		name    string
		cfg     BackendConfig
		want    string
		wantErr string
	}{
		{"defaults", BackendConfig{Socket: "/s", SharedDir: "/d", Vars: map[string]string{"bootstrap": "/b"}},
			"/bin/daemon --socket-path=/s --shared-dir=/d --cache=auto --bootstrap=/b", ""},
		{"xattr and threads", BackendConfig{Socket: "/s", SharedDir: "/d", Cache: "never", Xattr: true, ThreadPoolSize: 4,
			Vars: map[string]string{"bootstrap": "/b"}},
			"/bin/daemon --socket-path=/s --shared-dir=/d --cache=never --xattr --thread-pool-size=4 --bootstrap=/b", ""},
		{"missing var", BackendConfig{Socket: "/s"}, "", "no value for {bootstrap}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := Template("x", argv).Command(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(cmd.Args, " "); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestCVirtiofsdCommand(t *testing.T) {
	cmd, err := CVirtiofsd().Command(BackendConfig{Socket: "/s", SharedDir: "/d", Cache: "never", Xattr: true})
	if err != nil {
		t.Fatal(err)
	}
	want := CVirtiofsdPath + " --socket-path=/s -o source=/d -o cache=none -o xattr"
	if got := strings.Join(cmd.Args, " "); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if _, err := CVirtiofsd().Command(BackendConfig{Socket: "/s", SharedDir: "/d", Cache: "metadata"}); err == nil {
		t.Fatal("cache=metadata accepted by the C virtiofsd backend")
	}
}

func TestSelectBackends(t *testing.T) {
	down := errors.New("down")
	all := []Backend{
		{Name: "a"},
		{Name: "b", Probe: func(context.Context) error { return down }},
	}
	sel, err := SelectBackends(context.Background(), all, "")
	if err != nil || len(sel) != 2 || sel[0].Unavailable != nil || sel[1].Unavailable != down || sel[1].Requested {
		t.Fatalf("default selection: %+v, %v", sel, err)
	}
	sel, err = SelectBackends(context.Background(), all, "b")
	if err != nil || len(sel) != 1 || sel[0].Backend.Name != "b" || !sel[0].Requested {
		t.Fatalf("named selection: %+v, %v", sel, err)
	}
	if _, err := SelectBackends(context.Background(), all, "a,zz"); err == nil {
		t.Fatal("unknown backend accepted")
	}
}

// TestProbeFakeBackends: a backend that exits at once and one that never
// creates its socket are both reported unavailable, with their output.
func TestProbeFakeBackends(t *testing.T) {
	exits := Template("exits", []string{"/bin/sh", "-c", "echo not implemented >&2; exit 2"})
	if err := probeServes(context.Background(), exits); err == nil || !strings.Contains(err.Error(), "not implemented") {
		t.Fatalf("probe of an exiting backend: %v", err)
	}
	ok := Template("listens", []string{"/bin/sh", "-c", "exec python3 -c 'import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); time.sleep(30)' {socket}"})
	if _, err := lookPython(); err != nil {
		testenv.Skip(t, err)
	}
	if err := probeServes(context.Background(), ok); err != nil {
		t.Fatalf("probe of a listening backend: %v", err)
	}
}

func lookPython() (string, error) { return exec.LookPath("python3") }
