package inproc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// logRecorder keeps the log lines (Info and above) of the nodes whose
// Logger it made, to assert on what a node says.
type logRecorder struct {
	mu    sync.Mutex
	lines []logLine
}

type logLine struct {
	at    time.Time
	level slog.Level
	msg   string
	attrs map[string]string // the node logger's "node" included
}

func (r *logRecorder) logger() *slog.Logger { return slog.New(&recordHandler{r: r}) }

// matching returns the lines, from at on, for which keep is true.
func (r *logRecorder) matching(from time.Time, keep func(logLine) bool) []logLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logLine
	for _, l := range r.lines {
		if !l.at.Before(from) && keep(l) {
			out = append(out, l)
		}
	}
	return out
}

func (l logLine) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %q", l.at.Format("15:04:05.000"), l.level, l.msg)
	for k, v := range l.attrs {
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	return b.String()
}

type recordHandler struct {
	r     *logRecorder
	attrs []slog.Attr
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *recordHandler) Handle(_ context.Context, rec slog.Record) error {
	line := logLine{at: rec.Time, level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		line.attrs[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		line.attrs[a.Key] = a.Value.String()
		return true
	})
	h.r.mu.Lock()
	h.r.lines = append(h.r.lines, line)
	h.r.mu.Unlock()
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordHandler{r: h.r, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

// WithGroup is not used by the node's loggers; attributes stay flat.
func (h *recordHandler) WithGroup(string) slog.Handler { return h }
