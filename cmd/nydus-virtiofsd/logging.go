package main

import (
	"bufio"
	"fmt"
	"io"
	stdlog "log"
	"log/syslog"
	"os"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	lsyslog "github.com/sirupsen/logrus/hooks/syslog"
)

// newLogger makes the daemon's logger: logrus to stderr, to --log-file, or
// to syslog with --syslog (falling back to stderr when syslog cannot be
// reached). Kata reads the daemon's stderr line by line, so a line is one
// event. Every line carries the pid as the host sees it, also inside the
// namespace sandbox (where the process is pid 1). The returned warnings
// are for the caller to log once (the namespace sandbox's parent logs
// them, not its child too).
func newLogger(c *daemonConfig) (*logrus.Entry, []string, error) {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	applyLogFormat(l, c.Observe.LogFormat)
	var warnings []string
	switch c.LogLevel {
	case "off":
		l.SetOutput(io.Discard)
	default:
		lvl, err := logrus.ParseLevel(c.LogLevel)
		if err != nil {
			lvl = logrus.InfoLevel
		}
		l.SetLevel(lvl)
	}
	if c.LogFile != "" && c.LogLevel != "off" {
		f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("--log-file: %w", err)
		}
		l.SetOutput(f) // stays open for the process's life
	}
	if c.Syslog {
		hook, err := lsyslog.NewSyslogHook("", "", syslog.LOG_DAEMON|syslog.LOG_INFO, prog)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("--syslog: syslog unavailable (%v); logging to stderr", err))
		} else {
			l.AddHook(hook)
			l.SetOutput(io.Discard)
		}
	}
	// go-fuse logs through the standard logger (fuse --debug): keep our
	// format.
	stdlog.SetFlags(0)
	stdlog.SetOutput(l.WriterLevel(logrus.DebugLevel))
	return l.WithField("pid", hostPID()), warnings, nil
}

// hostPID is this process's pid in the outermost pid namespace it is
// visible in: /proc/self/status's first NSpid, read before any sandbox
// hides the host's /proc; the namespace sandbox's child would otherwise
// log pid=1.
func hostPID() int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return os.Getpid()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
			if fs := strings.Fields(rest); len(fs) > 0 {
				if pid, err := strconv.Atoi(fs[0]); err == nil {
					return pid
				}
			}
		}
	}
	return os.Getpid()
}

// toolLogger sets up logging for the image subcommands (check, unpack,
// fuse, create): logrus' standard logger at level, to file when given.
func toolLogger(level, file string) (*logrus.Logger, error) {
	c := daemonConfig{LogLevel: "info"}
	if err := setLogLevel(&c, level); err != nil {
		return nil, usageError{err}
	}
	l := logrus.StandardLogger()
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	l.SetOutput(os.Stderr)
	if c.LogLevel == "off" {
		l.SetOutput(io.Discard)
	} else if lvl, err := logrus.ParseLevel(c.LogLevel); err == nil {
		l.SetLevel(lvl)
	}
	if file != "" && c.LogLevel != "off" {
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("--log-file: %w", err)
		}
		l.SetOutput(f)
	}
	stdlog.SetFlags(0)
	stdlog.SetOutput(l.WriterLevel(logrus.DebugLevel))
	return l, nil
}
