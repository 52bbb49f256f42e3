package checker

import (
	"slices"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// sessionsRun: u logs phone s1 in, then phone s2 (which kicks s1) and
// desk s3, then logs s3 out; the phone acks 2 then 3; bob sends c two
// messages, u one, and u reads up to 1. Two replicas hold the result.
func sessionsRun() ([]history.Op, history.Final) {
	ops := []history.Op{
		{Kind: history.Login, Timeline: "u", Key: "s1", Device: "p1", Class: "phone", Outcome: history.OK, Seq: 1, Invoke: 1, Complete: 2},
		{Kind: history.Login, Timeline: "u", Key: "s2", Device: "p2", Class: "phone", Outcome: history.OK, Seq: 2, Ended: []string{"s1"}, Invoke: 3, Complete: 4},
		{Kind: history.Login, Timeline: "u", Key: "s3", Device: "d", Class: "desktop", Outcome: history.OK, Seq: 3, Invoke: 5, Complete: 6},
		{Kind: history.Logout, Timeline: "u", Key: "s3", Outcome: history.OK, Invoke: 7, Complete: 8},
		{Kind: history.Ack, Timeline: "u", Device: "p2", Session: "s2", After: 2, Seq: 2, Outcome: history.OK, Invoke: 9, Complete: 10},
		{Kind: history.Ack, Timeline: "u", Device: "p2", Session: "s2", After: 3, Seq: 3, Outcome: history.OK, Invoke: 11, Complete: 12},
		{Kind: history.Send, Timeline: "c", Sender: "bob", Recipients: []string{"u", "bob"}, Outcome: history.OK, Seq: 1},
		{Kind: history.Send, Timeline: "c", Sender: "u", Recipients: []string{"u", "bob"}, Outcome: history.OK, Seq: 2},
		{Kind: history.Send, Timeline: "c", Sender: "bob", Recipients: []string{"u", "bob"}, Outcome: history.OK, Seq: 3},
		{Kind: history.MarkRead, Timeline: "u", Conversation: "c", After: 1, Seq: 1, Outcome: history.OK, Invoke: 13, Complete: 14},
	}
	conv := []history.Entry{{Seq: 1, Sender: "bob"}, {Seq: 2, Sender: "u"}, {Seq: 3, Sender: "bob"}}
	user := func() history.UserState {
		return history.UserState{
			Active: []history.SessionState{{Session: "s2", Device: "p2", Class: "phone"}},
			Ended: []history.SessionState{
				{Session: "s1", Device: "p1", Class: "phone", Reason: "kicked", EndedBy: "s2"},
				{Session: "s3", Device: "d", Class: "desktop", Reason: "logout"},
			},
			Events: []history.SessionState{
				{Session: "s1", Device: "p1", Class: "phone", Reason: "kicked", EndedBy: "s2"},
				{Session: "s3", Device: "d", Class: "desktop", Reason: "logout"},
			},
			Conversations: []history.ConversationState{{Conversation: "c", LastSeq: 3, LastSender: "bob", Unread: 1, ReadSeq: 1}},
		}
	}
	bob := func() history.UserState {
		return history.UserState{Conversations: []history.ConversationState{{Conversation: "c", LastSeq: 3, LastSender: "bob", Unread: 1, ReadSeq: 0}}}
	}
	return ops, history.Final{
		Timelines: map[string]map[string][]history.Entry{"n1": {"c": conv}},
		Users: map[string]map[string]history.UserState{
			"n1": {"u": user(), "bob": bob()},
			"n2": {"u": user(), "bob": bob()},
		},
	}
}

func TestSessionsChecker(t *testing.T) {
	tests := []struct {
		name string
		edit func(ops []history.Op, f *history.Final)
		want string // "" : valid
	}{
		{"valid", func([]history.Op, *history.Final) {}, ""},
		{"two phones active", func(ops []history.Op, f *history.Final) {
			for _, n := range []string{"n1", "n2"} {
				u := f.Users[n]["u"]
				u.Active = append(u.Active, history.SessionState{Session: "s1", Device: "p1", Class: "phone"})
				u.Events = u.Events[1:]
				u.Ended = u.Ended[1:]
				f.Users[n]["u"] = u
			}
		}, "limit"},
		{"a session ended twice", func(ops []history.Op, f *history.Final) {
			for _, n := range []string{"n1", "n2"} {
				u := f.Users[n]["u"]
				u.Events = append(u.Events, history.SessionState{Session: "s1", Reason: "replaced"})
				f.Users[n]["u"] = u
			}
		}, "2 end events"},
		{"a kick without its event", func(ops []history.Op, f *history.Final) {
			for _, n := range []string{"n1", "n2"} {
				u := f.Users[n]["u"]
				u.Events = u.Events[1:]
				f.Users[n]["u"] = u
			}
		}, "ended (kicked) with events"},
		{"replicas differ", func(ops []history.Op, f *history.Final) {
			u := f.Users["n2"]["u"]
			u.Active = []history.SessionState{{Session: "s9", Device: "p9", Class: "phone"}}
			f.Users["n2"]["u"] = u
		}, "differ"},
		{"acknowledged login lost", func(ops []history.Op, f *history.Final) {
			for _, n := range []string{"n1", "n2"} {
				u := f.Users[n]["u"]
				u.Events, u.Ended = u.Events[:1], u.Ended[:1] // no trace of s3
				f.Users[n]["u"] = u
			}
		}, "s3 (login acknowledged, epoch 3) is active 0 times with 0 end events"},
		{"cursor went back", func(ops []history.Op, f *history.Final) { ops[5].Seq = 1 }, "cursor went back"},
		{"read marker went back", func(ops []history.Op, f *history.Final) {
			ops[3] = history.Op{Kind: history.MarkRead, Timeline: "u", Conversation: "c", After: 1, Seq: 0, Outcome: history.OK, Invoke: 15, Complete: 16}
		}, "read marker went back"},
		{"unread counts the user's own message", func(ops []history.Op, f *history.Final) {
			for _, n := range []string{"n1", "n2"} {
				u := f.Users[n]["u"]
				u.Conversations = []history.ConversationState{{Conversation: "c", LastSeq: 3, LastSender: "bob", Unread: 2, ReadSeq: 1}}
				f.Users[n]["u"] = u
			}
		}, "unread past"},
		{"marker below an acknowledged read", func(ops []history.Op, f *history.Final) {
			for _, n := range []string{"n1", "n2"} {
				u := f.Users[n]["u"]
				u.Conversations = []history.ConversationState{{Conversation: "c", LastSeq: 3, LastSender: "bob", Unread: 2, ReadSeq: 0}}
				f.Users[n]["u"] = u
			}
		}, "read marker 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ops, f := sessionsRun()
			tc.edit(ops, &f)
			v := Sessions(ops, f, OnePerClass)
			if v.Valid != (tc.want == "") {
				t.Fatalf("valid=%v, want %v: %v", v.Valid, tc.want == "", v.Problems)
			}
			if tc.want != "" && !slices.ContainsFunc(v.Problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Fatalf("problems %v, want one mentioning %q", v.Problems, tc.want)
			}
		})
	}
}
