package checker

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// A hand-made valid run: two appends, a head and a pull on timeline "t",
// read back identically from two replicas.
func validRun() ([]history.Op, history.Final) {
	ops := []history.Op{
		{Process: 0, Kind: history.Append, Timeline: "t", Key: "k1", Payload: "p1", Invoke: 0, Complete: 10, Outcome: history.OK, Seq: 1},
		{Process: 1, Kind: history.Append, Timeline: "t", Key: "k2", Payload: "p2", Invoke: 5, Complete: 15, Outcome: history.OK, Seq: 2},
		{Process: 2, Kind: history.Append, Timeline: "t", Key: "k3", Payload: "p3", Invoke: 6, Outcome: history.Unknown},
		{Process: 3, Kind: history.Append, Timeline: "t", Key: "k4", Payload: "p4", Invoke: 7, Complete: 8, Outcome: history.Fail},
		{Process: 4, Kind: history.Head, Timeline: "t", Invoke: 20, Complete: 25, Outcome: history.OK, HeadSeq: 2},
		{Process: 4, Kind: history.Pull, Timeline: "t", After: 0, Invoke: 30, Complete: 35, Outcome: history.OK, HeadSeq: 3,
			Entries: []history.Entry{{Seq: 1, Key: "k1", Payload: "p1"}, {Seq: 2, Key: "k2", Payload: "p2"}, {Seq: 3, Key: "k3", Payload: "p3"}}},
	}
	entries := []history.Entry{{Seq: 1, Key: "k1", Payload: "p1"}, {Seq: 2, Key: "k2", Payload: "p2"}, {Seq: 3, Key: "k3", Payload: "p3"}}
	final := history.Final{
		Timelines: map[string]map[string][]history.Entry{"n1": {"t": entries}, "n2": {"t": slices.Clone(entries)}},
		Digests:   map[uint64]map[string]string{1: {"n1": "abc", "n2": "abc"}},
	}
	return ops, final
}

func all(ops []history.Op, f history.Final) []Verdict {
	return []Verdict{
		Acknowledged(ops, f),
		Sequences(ops, f),
		IdempotencyKeys(f),
		Linearizable(ops, f, 10*time.Second),
		Replicas(f),
	}
}

func invalid(vs []Verdict) []string {
	var out []string
	for _, v := range vs {
		if !v.Valid {
			out = append(out, v.Checker)
		}
	}
	return out
}

func TestCheckersOnHandMadeHistories(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(ops []history.Op, f *history.Final) []history.Op
		want   []string // the checkers that must fail
	}{
		{"valid", func(ops []history.Op, f *history.Final) []history.Op { return ops }, nil},
		{"lost write", func(ops []history.Op, f *history.Final) []history.Op {
			// n2 lost the acknowledged k2 (and what came after).
			f.Timelines["n2"]["t"] = f.Timelines["n2"]["t"][:1]
			return ops
		}, []string{"acknowledged", "replicas"}},
		{"duplicate", func(ops []history.Op, f *history.Final) []history.Op {
			for _, n := range []string{"n1", "n2"} {
				f.Timelines[n]["t"] = append(f.Timelines[n]["t"], history.Entry{Seq: 4, Key: "k1", Payload: "p1"})
			}
			return ops
		}, []string{"idempotency"}},
		{"unknown append applied twice", func(ops []history.Op, f *history.Final) []history.Op {
			for _, n := range []string{"n1", "n2"} {
				f.Timelines[n]["t"] = append(f.Timelines[n]["t"], history.Entry{Seq: 4, Key: "k3", Payload: "p3"})
			}
			return ops
		}, []string{"sequences", "idempotency"}},
		{"gap", func(ops []history.Op, f *history.Final) []history.Op {
			for _, n := range []string{"n1", "n2"} {
				f.Timelines[n]["t"][2].Seq = 4
			}
			return ops
			// The pull read k3 at seq 3, which no replica now holds.
		}, []string{"sequences", "linearizable"}},
		{"stale read", func(ops []history.Op, f *history.Final) []history.Op {
			ops[4].HeadSeq = 1 // after both appends were acknowledged
			return ops
		}, []string{"linearizable"}},
		{"read of a write that never happened", func(ops []history.Op, f *history.Final) []history.Op {
			ops[5].Entries[2] = history.Entry{Seq: 3, Key: "k4", Payload: "p4"} // k4 failed
			return ops
		}, []string{"linearizable"}},
		{"acknowledged at the wrong seq", func(ops []history.Op, f *history.Final) []history.Op {
			ops[0].Seq, ops[1].Seq = 2, 1
			return ops
		}, []string{"acknowledged", "linearizable"}},
		{"unknown append that never took effect", func(ops []history.Op, f *history.Final) []history.Op {
			for _, n := range []string{"n1", "n2"} {
				f.Timelines[n]["t"] = f.Timelines[n]["t"][:2]
			}
			ops[5].HeadSeq, ops[5].Entries = 2, ops[5].Entries[:2]
			return ops
		}, nil},
		{"read of a write later lost", func(ops []history.Op, f *history.Final) []history.Op {
			for _, n := range []string{"n1", "n2"} {
				f.Timelines[n]["t"] = f.Timelines[n]["t"][:2] // the pull saw k3
			}
			return ops
		}, []string{"linearizable"}},
		{"no final copy of a timeline", func(ops []history.Op, f *history.Final) []history.Op {
			delete(f.Timelines["n1"], "t")
			delete(f.Timelines["n2"], "t")
			return ops
		}, []string{"linearizable"}},
		{"replicas diverged", func(ops []history.Op, f *history.Final) []history.Op {
			f.Digests[1]["n2"] = "def"
			return ops
		}, []string{"replicas"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ops, f := validRun()
			ops = tc.mutate(ops, &f)
			vs := all(ops, f)
			if got := invalid(vs); !slices.Equal(got, tc.want) {
				t.Fatalf("failing checkers %v, want %v: %+v", got, tc.want, vs)
			}
			wantSummary := "jepsen-lite: VALID"
			if len(tc.want) > 0 {
				wantSummary = "jepsen-lite: INVALID ("
			}
			if s := Summary(vs); len(s) < len(wantSummary) || s[:len(wantSummary)] != wantSummary {
				t.Fatalf("summary %q", s)
			}
		})
	}
}

// bigRun simulates procs clients appending to and reading one timeline with
// overlapping calls, as a correct store would answer them.
func bigRun(ops, procs int) ([]history.Op, history.Final) {
	rng := rand.New(rand.NewPCG(1, 2))
	var hist []history.Op
	var entries []history.Entry
	now := int64(0)
	for i := range ops {
		now += 10
		p := i % procs
		op := history.Op{Process: p, Timeline: "t", Invoke: now - int64(rng.IntN(procs*10)), Complete: now + int64(rng.IntN(procs*10)), Outcome: history.OK}
		switch rng.IntN(4) {
		case 0:
			op.Kind, op.HeadSeq = history.Head, uint64(len(entries))
		case 1:
			op.Kind, op.HeadSeq = history.Pull, uint64(len(entries))
			op.After = uint64(rng.IntN(len(entries) + 1))
			op.Entries = slices.Clone(entries[op.After:min(len(entries), int(op.After)+100)])
		default:
			key := fmt.Sprintf("k%d", i)
			op.Kind, op.Key, op.Payload = history.Append, key, key
			if rng.IntN(50) == 0 {
				op.Outcome, op.Complete = history.Unknown, 0
				if rng.IntN(2) == 0 {
					break // never took effect
				}
			} else {
				op.Seq = uint64(len(entries) + 1)
			}
			entries = append(entries, history.Entry{Seq: uint64(len(entries) + 1), Key: key, Payload: key})
		}
		hist = append(hist, op)
	}
	return hist, history.Final{Timelines: map[string]map[string][]history.Entry{"n1": {"t": entries}}}
}

// A long, busy timeline is decided, and a single stale read in it is found.
func TestLinearizableOnALongHistory(t *testing.T) {
	ops, f := bigRun(20000, 8)
	if v := Linearizable(ops, f, time.Minute); !v.Valid {
		t.Fatalf("valid history judged %+v", v)
	}
	for i := len(ops) / 2; ; i++ {
		if ops[i].Kind == history.Head && ops[i].HeadSeq > 0 {
			ops[i].HeadSeq -= 10
			break
		}
	}
	if v := Linearizable(ops, f, time.Minute); v.Valid || !strings.Contains(v.Problems[0], "not linearizable") {
		t.Fatalf("stale read in a long history judged %+v", v)
	}
}

func BenchmarkLinearizable(b *testing.B) {
	ops, f := bigRun(20000, 8)
	for b.Loop() {
		if v := Linearizable(ops, f, time.Minute); !v.Valid {
			b.Fatal(v)
		}
	}
}

func TestHistoryRoundTrips(t *testing.T) {
	ops, _ := validRun()
	var buf bytes.Buffer
	if err := history.Write(&buf, ops); err != nil {
		t.Fatal(err)
	}
	back, err := history.Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(ops) || back[5].Entries[2].Key != "k3" || back[2].Outcome != history.Unknown {
		t.Fatalf("round trip changed the history: %+v", back)
	}
	if _, err := history.Read(bytes.NewBufferString("{not json\n")); err == nil {
		t.Fatal("garbage read as a history")
	}
}

// A hand-made fan-out: conversation "c" holds two messages, the second
// from a Send whose outcome was unknown; both reached members a and b
// (and the sender's timeline, s).
func fanOutRun() ([]history.Op, history.Final) {
	ops := []history.Op{
		{Process: 0, Kind: history.Send, Timeline: "c", Key: "k1", Payload: "hi", Sender: "s", Recipients: []string{"a", "b"}, Invoke: 0, Complete: 5, Outcome: history.OK, Seq: 1},
		{Process: 1, Kind: history.Send, Timeline: "c", Key: "k2", Payload: "yo", Sender: "s", Recipients: []string{"a", "b"}, Invoke: 6, Outcome: history.Unknown},
		{Process: 2, Kind: history.Send, Timeline: "c", Key: "k3", Payload: "no", Sender: "s", Recipients: []string{"a"}, Invoke: 7, Complete: 8, Outcome: history.Fail},
	}
	conv := []history.Entry{{Seq: 1, Key: "k1", Payload: "hi", Sender: "s"}, {Seq: 2, Key: "k2", Payload: "yo", Sender: "s"}}
	delivered := func() []history.Entry {
		return []history.Entry{
			{Seq: 1, Payload: "hi", Sender: "s", Conversation: "c", ConversationSeq: 1},
			{Seq: 2, Payload: "yo", Sender: "s", Conversation: "c", ConversationSeq: 2},
		}
	}
	final := history.Final{Timelines: map[string]map[string][]history.Entry{
		"n1": {"c": conv, "a": delivered(), "s": delivered()},
		"n2": {"b": delivered()},
	}}
	return ops, final
}

func TestFanOutChecker(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(f *history.Final)
		valid  bool
	}{
		{"valid", func(f *history.Final) {}, true},
		{"a member missed a message", func(f *history.Final) { f.Timelines["n2"]["b"] = f.Timelines["n2"]["b"][:1] }, false},
		{"a message delivered twice", func(f *history.Final) {
			a := f.Timelines["n1"]["a"]
			f.Timelines["n1"]["a"] = append(a, history.Entry{Seq: 3, Payload: "yo", Sender: "s", Conversation: "c", ConversationSeq: 2})
		}, false},
		{"out of conversation order", func(f *history.Final) {
			a := f.Timelines["n1"]["a"]
			a[0].ConversationSeq, a[1].ConversationSeq = 2, 1
			a[0].Payload, a[1].Payload = "yo", "hi"
		}, false},
		{"a delivery of a message the conversation lacks", func(f *history.Final) {
			a := f.Timelines["n1"]["a"]
			f.Timelines["n1"]["a"] = append(a, history.Entry{Seq: 3, Payload: "no", Sender: "s", Conversation: "c", ConversationSeq: 3})
		}, false},
		{"a delivery with another payload", func(f *history.Final) { f.Timelines["n2"]["b"][1].Payload = "changed" }, false},
		{"the sender's own timeline missed it", func(f *history.Final) { f.Timelines["n1"]["s"] = nil }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ops, f := fanOutRun()
			tc.mutate(&f)
			if v := FanOut(ops, f); v.Valid != tc.valid {
				t.Fatalf("fan-out verdict %+v, want valid=%v", v, tc.valid)
			}
		})
	}
	// The conversation itself goes through the other checkers as appends.
	ops, f := fanOutRun()
	for _, v := range []Verdict{Acknowledged(ops, f), Sequences(ops, f), Linearizable(ops, f, 10*time.Second)} {
		if !v.Valid {
			t.Fatalf("%+v", v)
		}
	}
}

func TestSubscriptionsChecker(t *testing.T) {
	final := func() history.Final {
		_, f := validRun()
		return f
	}
	received := func(seqs ...uint64) []history.Subscription {
		_, f := validRun()
		var es []history.Entry
		for _, s := range seqs {
			es = append(es, f.Timelines["n1"]["t"][s-1])
		}
		return []history.Subscription{{Consumer: 0, Received: map[string][]history.Entry{"t": es}}}
	}
	cases := []struct {
		name  string
		subs  []history.Subscription
		valid bool
	}{
		{"everything once, in order", received(1, 2, 3), true},
		{"a seq twice", received(1, 2, 2, 3), false},
		{"out of order", received(1, 3, 2), false},
		{"a gap", received(1, 3), false},
		{"missing after the heal", received(1, 2), false},
		{"nothing received", []history.Subscription{{Received: map[string][]history.Entry{"t": nil}}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if v := Subscriptions(tc.subs, final()); v.Valid != tc.valid {
				t.Fatalf("verdict %+v, want valid=%v", v, tc.valid)
			}
		})
	}
	subs := received(1, 2, 3)
	subs[0].Received["t"][1].Key = "other"
	if v := Subscriptions(subs, final()); v.Valid {
		t.Fatal("a received entry that differs from the replicas' passed")
	}
}
