package backend

import (
	"fmt"
	"strings"
	"testing"
)

// FuzzParseConfig: any bytes give a config or an error, never a panic,
// and an accepted config passes validation and builds (or refuses) a
// backend without panicking.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"device":{"backend":{"type":"registry","config":{"host":"h","repo":"r","auth":"dTpw"}}},"mode":"direct"}`))
	f.Add([]byte("version = 2\n[backend]\ntype = \"s3\"\n[backend.s3]\nregion = \"r\"\nbucket_name = \"b\"\n"))
	f.Add([]byte(`{"version":2,"backend":{"type":"http-proxy","http-proxy":{"addr":"http://127.0.0.1:1"}},"cache":{"type":"fscache","fscache":{"work_dir":"/w"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			if strings.Contains(err.Error(), "dTpw") {
				t.Fatalf("error quotes the auth: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails validation: %v", err)
		}
		if c.Backend.Type != "localfs" {
			if b, err := c.NewBackend(Options{}); err == nil && b == nil {
				t.Fatal("nil backend without error")
			}
		}
	})
}

// FuzzParseChallenge: any WWW-Authenticate value parses or fails cleanly.
func FuzzParseChallenge(f *testing.F) {
	f.Add(`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`)
	f.Add(`Basic realm="r"`)
	f.Add(`Bearer realm="a\"b", service=s,,`)
	f.Fuzz(func(t *testing.T, h string) {
		c, err := ParseChallenge(h)
		if err == nil && c.Scheme == "" {
			t.Fatal("challenge without scheme")
		}
	})
}

// FuzzParseTokenAnswer: a token server's answer gives a usable token or
// an error; a token never carries a line break into a header.
func FuzzParseTokenAnswer(f *testing.F) {
	f.Add([]byte(`{"token":"abc","expires_in":300}`))
	f.Add([]byte(`{"access_token":"x","expires_in":-1}`))
	f.Add([]byte(`{"token":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, ttl, err := ParseTokenAnswer(body)
		if err != nil {
			return
		}
		if tok == "" || ttl <= 0 || strings.ContainsAny(tok, "\r\n") {
			t.Fatalf("token %q ttl %v", tok, ttl)
		}
	})
}

// FuzzContentRange: only the exact range asked for is accepted.
func FuzzContentRange(f *testing.F) {
	f.Add("bytes 0-99/100", int64(0), 100)
	f.Add("bytes 10-19/*", int64(10), 10)
	f.Fuzz(func(t *testing.T, cr string, off int64, n int) {
		if off < 0 || n <= 0 || off > 1<<50 || n > 1<<30 {
			return
		}
		if checkContentRange(cr, off, n) == nil {
			var a, b int64
			if _, err := fmtSscanRange(cr, &a, &b); err != nil || a != off || b != off+int64(n)-1 {
				t.Fatalf("accepted %q for %d+%d", cr, off, n)
			}
		}
	})
}

func fmtSscanRange(cr string, a, b *int64) (int, error) {
	return fmt.Sscanf(cr, "bytes %d-%d/", a, b)
}
