package checker

import (
	"bytes"
	"slices"
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
		Linearizable(ops, 10*time.Second),
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
		}, []string{"sequences"}},
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
