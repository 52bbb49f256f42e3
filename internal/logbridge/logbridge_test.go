package logbridge

import (
	"bytes"
	"log"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func captured(level slog.Level) (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	return slog.New(h), &buf
}

// TestHclogLevels: each hclog level lands at its slog level, so that
// --log-level warn keeps Raft's warnings and errors and drops its info.
func TestHclogLevels(t *testing.T) {
	cases := []struct {
		min  slog.Level
		log  func(hclog.Logger)
		want string // the line, "" for none
	}{
		{slog.LevelWarn, func(l hclog.Logger) { l.Error("failed to contact", "peer", "n3") }, `level=ERROR msg="raft: failed to contact" peer=n3`},
		{slog.LevelWarn, func(l hclog.Logger) { l.Warn("heartbeat timeout reached") }, `level=WARN msg="raft: heartbeat timeout reached"`},
		{slog.LevelWarn, func(l hclog.Logger) { l.Info("entering follower state") }, ``},
		{slog.LevelInfo, func(l hclog.Logger) { l.Info("entering follower state") }, `level=INFO msg="raft: entering follower state"`},
		{slog.LevelInfo, func(l hclog.Logger) { l.Debug("votes") }, ``},
		{slog.LevelDebug, func(l hclog.Logger) { l.Debug("votes", "needed", 2) }, `level=DEBUG msg="raft: votes" needed=2`},
		{slog.LevelDebug, func(l hclog.Logger) { l.Trace("noise") }, ``},
		{slog.LevelInfo, func(l hclog.Logger) { l.With("group", 3).Named("snap").Warn("slow") }, `level=WARN msg="raft.snap: slow" group=3`},
		{slog.LevelInfo, func(l hclog.Logger) { l.SetLevel(hclog.Error); l.Warn("slow") }, ``},
		{slog.LevelInfo, func(l hclog.Logger) { l.Info("initial configuration", "servers", hclog.Fmt("%+v", []int{1, 2})) }, `level=INFO msg="raft: initial configuration" servers="[1 2]"`},
		{slog.LevelInfo, func(l hclog.Logger) { l.StandardLogger(nil).Print("[WARN] from a standard logger") }, `level=WARN msg="from a standard logger"`},
	}
	for _, tc := range cases {
		sl, buf := captured(tc.min)
		tc.log(Hclog(sl, "raft"))
		if got := strings.TrimSpace(buf.String()); got != tc.want {
			t.Errorf("at %v: got %q, want %q", tc.min, got, tc.want)
		}
	}
}

func TestHclogIsLevel(t *testing.T) {
	sl, _ := captured(slog.LevelWarn)
	l := Hclog(sl, "raft")
	if l.IsInfo() || l.IsDebug() || !l.IsWarn() || !l.IsError() {
		t.Fatalf("at warn: info %t debug %t warn %t error %t", l.IsInfo(), l.IsDebug(), l.IsWarn(), l.IsError())
	}
}

// TestWriterTags: memberlist's standard logger lines go out at their tags'
// levels, with or without a timestamp in front.
func TestWriterTags(t *testing.T) {
	cases := []struct {
		line string
		want string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:5555", `level=DEBUG msg="memberlist: Stream connection from=127.0.0.1:5555"`},
		{"[WARN] memberlist: Was able to connect to n3 over TCP but UDP probes failed", `level=WARN msg="memberlist: Was able to connect to n3 over TCP but UDP probes failed"`},
		{"[ERR] memberlist: Failed to send ping: timeout", `level=ERROR msg="memberlist: Failed to send ping: timeout"`},
		{"2026/12/03 10:00:00 [INFO] memberlist: Suspect n3 has failed", `level=INFO msg="memberlist: Suspect n3 has failed"`},
		{"no tag here", `level=DEBUG msg="no tag here"`},
		{"a message far from its start that mentions [ERROR] in passing", `level=DEBUG msg="a message far from its start that mentions [ERROR] in passing"`},
	}
	for _, tc := range cases {
		sl, buf := captured(slog.LevelDebug)
		log.New(Writer(sl, slog.LevelDebug), "", 0).Print(tc.line)
		if got := strings.TrimSpace(buf.String()); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.line, got, tc.want)
		}
	}
}

// clock is a settable time for the repeat tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func lines(buf *bytes.Buffer) []string {
	out := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(out) == 1 && out[0] == "" {
		return nil
	}
	return out
}

// TestHclogRepeats: Raft's line for each failed heartbeat goes out once
// per interval per peer and error, whatever its backoff says, with the
// count held back on the next one; other lines are not held back by it.
func TestHclogRepeats(t *testing.T) {
	failed := func(l hclog.Logger, peer string, i int) {
		l.Error("failed to heartbeat to", "peer", peer, "backoff time", time.Duration(i)*time.Millisecond, "error", "connection refused")
	}
	cases := []struct {
		name string
		opts []Option
		log  func(l hclog.Logger, c *clock)
		want []string
	}{
		{"repeats within an interval", nil, func(l hclog.Logger, c *clock) {
			for i := range 50 {
				failed(l, "n3", i)
				c.t = c.t.Add(50 * time.Millisecond) // 2.5 s in all
			}
		}, []string{`level=ERROR msg="raft: failed to heartbeat to" peer=n3 "backoff time"=0s error="connection refused"`}},
		{"the next interval carries the count", nil, func(l hclog.Logger, c *clock) {
			for i := range 30 {
				failed(l, "n3", i)
				c.t = c.t.Add(500 * time.Millisecond) // 15 s: two intervals begin
			}
		}, []string{
			`level=ERROR msg="raft: failed to heartbeat to" peer=n3 "backoff time"=0s error="connection refused"`,
			`level=ERROR msg="raft: failed to heartbeat to" peer=n3 "backoff time"=20ms error="connection refused" suppressed=19`,
		}},
		{"each peer and each error has its own", nil, func(l hclog.Logger, c *clock) {
			for i := range 10 {
				failed(l, "n3", i)
				failed(l, "n2", i)
				l.Error("failed to heartbeat to", "peer", "n3", "error", "i/o timeout")
			}
		}, []string{
			`level=ERROR msg="raft: failed to heartbeat to" peer=n3 "backoff time"=0s error="connection refused"`,
			`level=ERROR msg="raft: failed to heartbeat to" peer=n2 "backoff time"=0s error="connection refused"`,
			`level=ERROR msg="raft: failed to heartbeat to" peer=n3 error="i/o timeout"`,
		}},
		{"With and Named copies share the memory", nil, func(l hclog.Logger, c *clock) {
			g3 := l.With("group", 3)
			g3.Warn("failed to contact", "peer", "n3")
			l.With("group", 3).Warn("failed to contact", "peer", "n3")
			l.With("group", 4).Warn("failed to contact", "peer", "n3")
			g3.Named("snap").Warn("failed to contact", "peer", "n3")
			g3.Named("snap").Warn("failed to contact", "peer", "n3")
		}, []string{
			`level=WARN msg="raft: failed to contact" group=3 peer=n3`,
			`level=WARN msg="raft: failed to contact" group=4 peer=n3`,
			`level=WARN msg="raft.snap: failed to contact" group=3 peer=n3`,
		}},
		{"turned off", []Option{RepeatEvery(0)}, func(l hclog.Logger, c *clock) {
			for i := range 3 {
				failed(l, "n3", i)
			}
		}, []string{
			`level=ERROR msg="raft: failed to heartbeat to" peer=n3 "backoff time"=0s error="connection refused"`,
			`level=ERROR msg="raft: failed to heartbeat to" peer=n3 "backoff time"=1ms error="connection refused"`,
			`level=ERROR msg="raft: failed to heartbeat to" peer=n3 "backoff time"=2ms error="connection refused"`,
		}},
	}
	for _, tc := range cases {
		sl, buf := captured(slog.LevelDebug)
		c := &clock{t: time.Unix(1e9, 0)}
		l := Hclog(sl, "raft", append([]Option{withClock(c.now)}, tc.opts...)...)
		tc.log(l, c)
		if got := lines(buf); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got\n%s\nwant\n%s", tc.name, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
	}
}

// TestWriterRepeats: memberlist's repeated lines are held back the same
// way; one below the level shown holds nothing back.
func TestWriterRepeats(t *testing.T) {
	sl, buf := captured(slog.LevelInfo)
	c := &clock{t: time.Unix(1e9, 0)}
	l := log.New(Writer(sl, slog.LevelDebug, withClock(c.now)), "", 0)
	for range 20 {
		l.Print("[ERR] memberlist: Failed to send ping: connection refused")
		l.Print("[DEBUG] memberlist: Stream connection")
		c.t = c.t.Add(time.Second)
	}
	want := []string{
		`level=ERROR msg="memberlist: Failed to send ping: connection refused"`,
		`level=ERROR msg="memberlist: Failed to send ping: connection refused" suppressed=9`,
	}
	if got := lines(buf); !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
