package metrics

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Default bounds of the recent-errors list (as nydusd's: a count and a
// total size of messages).
const (
	DefaultMaxErrors = 500
	DefaultMaxSize   = 50 << 10
)

// Events keeps the most recent errors for GET /api/v1/daemon/events,
// bounded by count and by total message size; the oldest go first. It is
// a logrus hook: every log line at error level or above is kept.
type Events struct {
	mu        sync.Mutex
	maxErrors int
	maxSize   int
	total     uint64
	totalSize uint64
	size      int
	errs      []string
}

// NewEvents returns an empty list bounded by maxErrors entries and
// maxSize bytes (0: the defaults).
func NewEvents(maxErrors, maxSize int) *Events {
	if maxErrors <= 0 {
		maxErrors = DefaultMaxErrors
	}
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	return &Events{maxErrors: maxErrors, maxSize: maxSize}
}

// Add records an error message.
func (e *Events) Add(msg string) {
	if len(msg) > e.maxSize {
		msg = msg[:e.maxSize]
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.total++
	e.totalSize += uint64(len(msg))
	e.errs = append(e.errs, msg)
	e.size += len(msg)
	for len(e.errs) > e.maxErrors || e.size > e.maxSize {
		e.size -= len(e.errs[0])
		e.errs[0] = ""
		e.errs = e.errs[1:]
	}
}

// EventsReply is GET /api/v1/daemon/events (nydusd's names).
type EventsReply struct {
	MaxErrors   int      `json:"max_errors"`
	TotalErrors uint64   `json:"total_errors"`
	MaxSize     int      `json:"max_size"`
	TotalSize   uint64   `json:"total_size"`
	Errors      []string `json:"errors"`
}

// Snapshot returns the list.
func (e *Events) Snapshot() EventsReply {
	e.mu.Lock()
	defer e.mu.Unlock()
	return EventsReply{MaxErrors: e.maxErrors, TotalErrors: e.total, MaxSize: e.maxSize, TotalSize: e.totalSize,
		Errors: append([]string{}, e.errs...)}
}

// Levels makes Events a logrus hook for error, fatal and panic lines.
func (e *Events) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel}
}

// Fire records a log line as a JSON object: time, level, msg and fields.
func (e *Events) Fire(en *logrus.Entry) error {
	m := make(map[string]any, len(en.Data)+3)
	for k, v := range en.Data {
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		m[k] = v
	}
	m["time"] = en.Time.UTC().Format(time.RFC3339Nano)
	m["level"] = en.Level.String()
	m["msg"] = en.Message
	b, err := json.Marshal(m)
	if err != nil {
		b = []byte(en.Message)
	}
	e.Add(string(b))
	return nil
}
