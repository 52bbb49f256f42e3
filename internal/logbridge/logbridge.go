// Package logbridge sends the logs of the libraries syncstore embeds to its
// slog logger at their own levels: Raft logs through hclog, memberlist
// through a standard logger whose lines start with "[WARN]" and the like.
// Passing them through as one level (what hclog.FromStandardLogger and
// slog.NewLogLogger do) made Raft's errors INFO lines, hidden by nothing
// and found by no level filter.
//
// Both also hold back repeats: while a peer is down, Raft logs each failed
// heartbeat and append of every group it leads, about 20 lines a second
// that all say the same thing. A line identical to one that went out less
// than an interval ago (DefaultRepeatEvery) from the same logger is
// dropped and counted, and the next one that goes out carries the count as
// suppressed=N. "Identical" ignores the values that change from line to
// line (numbers, durations, times), so the line of each peer, each error
// text, each level goes out at least once per interval.
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
	"sync"
	"sync/atomic"
	"time"

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

// DefaultRepeatEvery is how often at most a repeated line goes out.
const DefaultRepeatEvery = 10 * time.Second

// SuppressedKey is the attribute that counts the repeats held back since
// the last line like it went out.
const SuppressedKey = "suppressed"

// Option configures Hclog and Writer.
type Option func(*repeats)

// RepeatEvery sets how often at most a repeated line goes out (0: every
// line does).
func RepeatEvery(d time.Duration) Option { return func(r *repeats) { r.every = d } }

// withClock replaces time.Now (tests).
func withClock(now func() time.Time) Option { return func(r *repeats) { r.now = now } }

// Hclog is an hclog.Logger writing to l, its messages prefixed with name
// ("raft: ...") as hclog does. Its With and Named copies share one memory
// of repeats.
func Hclog(l *slog.Logger, name string, opts ...Option) hclog.Logger {
	least := new(atomic.Int32)
	least.Store(int32(hclog.Trace))
	return &hclogger{l: l, name: name, least: least, repeats: newRepeats(opts)}
}

type hclogger struct {
	l       *slog.Logger
	name    string
	implied []any
	least   *atomic.Int32 // hclog's SetLevel, shared by With and Named copies
	repeats *repeats
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
	args = formatted(args)
	sl := toSlog(level)
	ok, held := h.repeats.allow(repeatKey(sl, msg, h.implied, args))
	if !ok {
		return
	}
	if held > 0 {
		args = append(slices.Clip(args), SuppressedKey, held)
	}
	h.l.Log(context.Background(), sl, msg, args...)
}

// repeatKey identifies a line for holding back its repeats: its level,
// message, the logger's With arguments (a group id names the source) and
// the values of its own arguments but for those that change from line to
// line anyway (Raft's "backoff time", "time", "term"...).
func repeatKey(level slog.Level, msg string, implied, args []any) string {
	var b strings.Builder
	fmt.Fprint(&b, int(level), "\x00", msg)
	for _, a := range implied {
		fmt.Fprint(&b, "\x00", a)
	}
	b.WriteString("\x00\x00")
	for i, a := range args {
		if i%2 == 1 && varies(a) {
			continue
		}
		fmt.Fprint(&b, "\x00", a)
	}
	return b.String()
}

func varies(v any) bool {
	switch v.(type) {
	case time.Duration, time.Time, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return true
	}
	return false
}

// repeats remembers, per line, when it may go out again and how many
// copies were held back meanwhile.
type repeats struct {
	every time.Duration
	now   func() time.Time
	mu    sync.Mutex
	seen  map[string]*repeat
}

type repeat struct {
	next time.Time
	held int
}

// pruneAbove: past this many remembered lines, those free to go out again
// with nothing held back are forgotten.
const pruneAbove = 1024

func newRepeats(opts []Option) *repeats {
	r := &repeats{every: DefaultRepeatEvery, now: time.Now, seen: map[string]*repeat{}}
	for _, o := range opts {
		o(r)
	}
	return r
}

// allow reports whether the line key may go out now and how many copies of
// it were held back since the last one that did.
func (r *repeats) allow(key string) (ok bool, held int) {
	if r.every <= 0 {
		return true, 0
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.seen[key]
	if e != nil && now.Before(e.next) {
		e.held++
		return false, 0
	}
	if e != nil {
		held = e.held
	}
	if e == nil && len(r.seen) >= pruneAbove {
		for k, o := range r.seen {
			if o.held == 0 && !now.Before(o.next) {
				delete(r.seen, k)
			}
		}
	}
	r.seen[key] = &repeat{next: now.Add(r.every)}
	return true, held
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
	return &writer{l: h.l, untagged: slog.LevelInfo, repeats: h.repeats}
}

// Writer is an io.Writer for a standard logger (memberlist's): each line
// goes to l at the level its "[DEBUG]", "[INFO]", "[WARN]" or "[ERR]"/"[ERROR]"
// tag says, tag and the standard logger's timestamp removed; a line
// without a tag at untagged. A line identical to one that went out less
// than an interval ago is held back (see the package comment).
func Writer(l *slog.Logger, untagged slog.Level, opts ...Option) io.Writer {
	return &writer{l: l, untagged: untagged, repeats: newRepeats(opts)}
}

// tagWithin: a tag is looked for in a line's first bytes only (after a
// timestamp, if the logger writes one), not in the message.
const tagWithin = 32

type writer struct {
	l        *slog.Logger
	untagged slog.Level
	repeats  *repeats
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
		if !w.l.Enabled(context.Background(), level) {
			continue // not remembered: a line nobody sees holds nothing back
		}
		ok, held := w.repeats.allow(repeatKey(level, msg, nil, nil))
		if !ok {
			continue
		}
		if held > 0 {
			w.l.Log(context.Background(), level, msg, SuppressedKey, held)
			continue
		}
		w.l.Log(context.Background(), level, msg)
	}
	return len(p), nil
}
