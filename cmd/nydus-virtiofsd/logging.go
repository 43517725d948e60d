package main

import (
	"io"
	"log/syslog"
	"os"

	"github.com/sirupsen/logrus"
	lsyslog "github.com/sirupsen/logrus/hooks/syslog"
)

// newLogger makes the daemon's logger: logrus to stderr, or to syslog with
// --syslog (falling back to stderr when syslog cannot be reached). Kata reads
// the daemon's stderr line by line, so a line is one event.
func newLogger(c *daemonConfig) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
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
	if c.Syslog {
		hook, err := lsyslog.NewSyslogHook("", "", syslog.LOG_DAEMON|syslog.LOG_INFO, "nydus-virtiofsd")
		if err != nil {
			l.WithError(err).Warn("syslog unavailable; logging to stderr")
		} else {
			l.AddHook(hook)
			l.SetOutput(io.Discard)
		}
	}
	return l.WithField("pid", os.Getpid())
}
