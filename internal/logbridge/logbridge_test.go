package logbridge

import (
	"bytes"
	"log"
	"log/slog"
	"strings"
	"testing"

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
