// Package logbridge sends the logs of the libraries syncstore embeds to its
// slog logger at their own levels: Raft logs through hclog, memberlist
// through a standard logger whose lines start with "[WARN]" and the like.
// Passing them through as one level (what hclog.FromStandardLogger and
// slog.NewLogLogger do) made Raft's errors INFO lines, hidden by nothing
// and found by no level filter.
package logbridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// LevelTrace is below slog's Debug, for hclog's Trace.
const LevelTrace = slog.LevelDebug - 4

// levels maps hclog's levels to slog's.
var levels = map[hclog.Level]slog.Level{
	hclog.Trace: LevelTrace,
	hclog.Debug: slog.LevelDebug,
	hclog.Info:  slog.LevelInfo,
	hclog.Warn:  slog.LevelWarn,
	hclog.Error: slog.LevelError,
}

func toSlog(l hclog.Level) slog.Level {
	if s, ok := levels[l]; ok {
		return s
	}
	return slog.LevelInfo // NoLevel, Off and unknown ones: never dropped silently
}

// Hclog is an hclog.Logger writing to l, its messages prefixed with name
// ("raft: ...") as hclog does.
func Hclog(l *slog.Logger, name string) hclog.Logger {
	least := new(atomic.Int32)
	least.Store(int32(hclog.Trace))
	return &hclogger{l: l, name: name, least: least}
}

type hclogger struct {
	l       *slog.Logger
	name    string
	implied []any
	least   *atomic.Int32 // hclog's SetLevel, shared by With and Named copies
}

func (h *hclogger) enabled(level hclog.Level) bool {
	return level >= hclog.Level(h.least.Load()) && h.l.Enabled(context.Background(), toSlog(level))
}

func (h *hclogger) Log(level hclog.Level, msg string, args ...any) {
	if !h.enabled(level) {
		return
	}
	if h.name != "" {
		msg = h.name + ": " + msg
	}
	h.l.Log(context.Background(), toSlog(level), msg, formatted(args)...)
}

// formatted renders the hclog.Fmt values among args (Raft logs its
// configurations so) as hclog would, instead of as a slice.
func formatted(args []any) []any {
	cloned := false
	for i, a := range args {
		f, ok := a.(hclog.Format)
		if !ok || len(f) == 0 {
			continue
		}
		if !cloned { // the caller's slice stays as it was
			args, cloned = slices.Clone(args), true
		}
		if layout, ok := f[0].(string); ok {
			args[i] = fmt.Sprintf(layout, f[1:]...)
		} else {
			args[i] = fmt.Sprint(f...)
		}
	}
	return args
}

func (h *hclogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }
func (h *hclogger) IsTrace() bool                 { return h.enabled(hclog.Trace) }
func (h *hclogger) IsDebug() bool                 { return h.enabled(hclog.Debug) }
func (h *hclogger) IsInfo() bool                  { return h.enabled(hclog.Info) }
func (h *hclogger) IsWarn() bool                  { return h.enabled(hclog.Warn) }
func (h *hclogger) IsError() bool                 { return h.enabled(hclog.Error) }
func (h *hclogger) ImpliedArgs() []any            { return h.implied }
func (h *hclogger) Name() string                  { return h.name }
func (h *hclogger) SetLevel(level hclog.Level)    { h.least.Store(int32(level)) }
func (h *hclogger) GetLevel() hclog.Level         { return hclog.Level(h.least.Load()) }

func (h *hclogger) With(args ...any) hclog.Logger {
	c := *h
	c.l = h.l.With(args...)
	c.implied = append(append([]any(nil), h.implied...), args...)
	return &c
}

func (h *hclogger) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

func (h *hclogger) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

func (h *hclogger) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(nil), "", 0)
}

func (h *hclogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return Writer(h.l, slog.LevelInfo)
}

// Writer is an io.Writer for a standard logger (memberlist's): each line
// goes to l at the level its "[DEBUG]", "[INFO]", "[WARN]" or "[ERR]"/"[ERROR]"
// tag says, tag and the standard logger's timestamp removed; a line
// without a tag at untagged.
func Writer(l *slog.Logger, untagged slog.Level) io.Writer {
	return &writer{l: l, untagged: untagged}
}

// tagWithin: a tag is looked for in a line's first bytes only (after a
// timestamp, if the logger writes one), not in the message.
const tagWithin = 32

type writer struct {
	l        *slog.Logger
	untagged slog.Level
}

var tags = []struct {
	tag   string
	level slog.Level
}{
	{"[TRACE]", LevelTrace},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

func (w *writer) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		msg := strings.TrimRight(string(line), "\r\n")
		if msg == "" {
			continue
		}
		level, at, end := w.untagged, tagWithin, 0
		for _, t := range tags {
			if i := strings.Index(msg, t.tag); i >= 0 && i < at {
				level, at, end = t.level, i, i+len(t.tag)
			}
		}
		if end > 0 {
			msg = strings.TrimSpace(msg[end:])
		}
		w.l.Log(context.Background(), level, msg)
	}
	return len(p), nil
}
