package testsvc

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// NginxOptions configure StartNginx.
type NginxOptions struct {
	// Root is served (HEAD and ranged GET) under /blobs/.
	Root string
	// Socket also listens on this unix socket (an absolute path).
	Socket string
	// ForwardProxy makes nginx an HTTP forward proxy: absolute-form
	// requests go to the host they name; /ping answers 200.
	ForwardProxy bool
	// RateLimit caps each answer's bandwidth ("" : none), e.g. "1m".
	RateLimit string
}

// Nginx is a running nginx.
type Nginx struct {
	Host   string // 127.0.0.1:port
	Socket string
	// AccessLog is the path of the access log (one line per request).
	AccessLog string
	stop      func()
}

// Stop kills nginx now (it is killed at the test's end anyway).
func (n *Nginx) Stop() { n.stop() }

// Requests is the number of requests logged so far.
func (n *Nginx) Requests() int {
	b, _ := os.ReadFile(n.AccessLog)
	return strings.Count(string(b), "\n")
}

// StartNginx starts nginx in the foreground, as one process, on a free
// loopback port.
func StartNginx(t testing.TB, o NginxOptions) *Nginx {
	t.Helper()
	bin := need(t, "nginx")
	dir := t.TempDir()
	n := &Nginx{Host: addr(FreePort(t)), Socket: o.Socket, AccessLog: filepath.Join(dir, "access.log")}
	var loc strings.Builder
	if o.RateLimit != "" {
		fmt.Fprintf(&loc, "    limit_rate %s;\n", o.RateLimit)
	}
	if o.Root != "" {
		fmt.Fprintf(&loc, "    location /blobs/ { alias %s/; }\n", o.Root)
	}
	if o.ForwardProxy {
		loc.WriteString("    location = /ping { return 200 \"ok\"; }\n")
		loc.WriteString("    location / { proxy_pass http://$http_host; proxy_buffering off; proxy_http_version 1.1; proxy_set_header Connection \"\"; }\n")
	}
	listen := "    listen " + n.Host + ";\n"
	if o.Socket != "" {
		listen += "    listen unix:" + o.Socket + ";\n"
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
  access_log %[2]s;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  default_type application/octet-stream;
  server {
%[3]s%[4]s  }
}
`, dir, n.AccessLog, listen, loc.String())
	cfg := writeFile(t, dir, "nginx.conf", conf)
	p := startProc(t, "nginx", func() bool {
		c, err := net.DialTimeout("tcp", n.Host, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, bin, "-c", cfg, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	n.stop = p.stop
	return n
}
