package fsm

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

func sendCmd(conv, sender string, recipients []string, payload, key string, now int64, lightAbove uint32) *fsmpb.Command {
	return &fsmpb.Command{NowMs: now, Op: &fsmpb.Command_Send{Send: &fsmpb.Send{
		Conversation: conv, Sender: sender, Recipients: recipients, Payload: []byte(payload),
		IdempotencyKey: key, DedupeWindowMs: day, LightAbove: lightAbove,
	}}}
}

func deliverCmd(now int64, items ...*fsmpb.DeliveryItem) *fsmpb.Command {
	return &fsmpb.Command{NowMs: now, Op: &fsmpb.Command_Deliver{Deliver: &fsmpb.Deliver{Items: items}}}
}

// item is a delivery of a conversation whose every message goes to user,
// so its delivery seq is its conversation seq.
func item(user, conv string, convSeq uint64, payload string) *fsmpb.DeliveryItem {
	return &fsmpb.DeliveryItem{Timeline: user, Conversation: conv, ConversationSeq: convSeq, DeliverySeq: convSeq, Sender: "alice", Payload: []byte(payload)}
}

func TestSendAppendsAndQueuesOneJobPerMessage(t *testing.T) {
	h := newHarness(t)
	rs := h.apply(
		sendCmd("c", "alice", []string{"bob", "carol", "bob"}, "hi", "k1", 10, 0),
		sendCmd("c", "alice", []string{"bob"}, "hi again", "k1", 11, 0), // a retry
		sendCmd("c", "bob", []string{"alice", "carol", "dave"}, "yo", "k2", 12, 2),
	)
	if rs[0].Err != nil || rs[0].Send.Seq != 1 || rs[0].Send.Recipients != 3 || rs[0].Send.Light {
		t.Fatalf("first send: %+v %v", rs[0].Send, rs[0].Err)
	}
	if rs[1].Err != nil || !rs[1].Send.Deduplicated || rs[1].Send.Seq != 1 {
		t.Fatalf("retried send: %+v %v", rs[1].Send, rs[1].Err)
	}
	if rs[2].Err != nil || rs[2].Send.Seq != 2 || !rs[2].Send.Light || rs[2].Send.Recipients != 4 {
		t.Fatalf("large send: %+v %v", rs[2].Send, rs[2].Err)
	}
	h.apply(sendCmd("b", "alice", nil, "elsewhere", "", 12, 0))
	if convs, err := h.f.OutboxConversations(10); err != nil || !slices.Equal(convs, []string{"b", "c"}) {
		t.Fatalf("conversations with jobs: %v %v", convs, err)
	}
	jobs, err := h.f.Outbox("c", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []OutboxJob{
		{Conversation: "c", ConversationSeq: 1, Sender: "alice", Recipients: []string{"bob", "carol", "alice"}},
		{Conversation: "c", ConversationSeq: 2, Sender: "bob", Recipients: []string{"alice", "carol", "dave", "bob"}, Light: true},
	}
	if len(jobs) != len(want) {
		t.Fatalf("outbox %+v, want %+v", jobs, want)
	}
	for i := range want {
		if jobs[i].Conversation != want[i].Conversation || jobs[i].ConversationSeq != want[i].ConversationSeq ||
			jobs[i].Sender != want[i].Sender || !slices.Equal(jobs[i].Recipients, want[i].Recipients) || jobs[i].Light != want[i].Light {
			t.Fatalf("job %d: %+v, want %+v", i, jobs[i], want[i])
		}
	}
	entries := h.pullAll("c")
	if len(entries) != 2 || entries[0].Sender != "alice" || string(entries[1].Payload) != "yo" {
		t.Fatalf("conversation entries %+v", entries)
	}

	h.apply(&fsmpb.Command{NowMs: 13, Op: &fsmpb.Command_DeliveryDone{DeliveryDone: &fsmpb.DeliveryDone{Conversation: "c", ConversationSeq: 1}}})
	if jobs, _ := h.f.Outbox("c", 10); len(jobs) != 1 || jobs[0].ConversationSeq != 2 {
		t.Fatalf("outbox after done: %+v", jobs)
	}
}

func TestDeliverWritesEachConversationSeqOnce(t *testing.T) {
	h := newHarness(t)
	rs := h.apply(
		deliverCmd(10, item("bob", "c", 1, "m1"), item("carol", "c", 1, "m1")),
		deliverCmd(11, item("bob", "c", 1, "m1"), item("carol", "c", 1, "m1")), // a new leader delivers again
		deliverCmd(12, item("bob", "c", 2, "m2"), item("bob", "d", 1, "other")),
		deliverCmd(13, item("bob", "c", 2, "m2")),
	)
	wants := []DeliverResult{{Written: 2}, {Skipped: 2}, {Written: 2}, {Skipped: 1}}
	for i, w := range wants {
		if rs[i].Err != nil || *rs[i].Deliver != w {
			t.Fatalf("deliver %d: %+v %v, want %+v", i, rs[i].Deliver, rs[i].Err, w)
		}
	}
	bob := h.pullAll("bob")
	if len(bob) != 3 {
		t.Fatalf("bob has %d entries: %+v", len(bob), bob)
	}
	for i, w := range []struct {
		conv string
		seq  uint64
	}{{"c", 1}, {"c", 2}, {"d", 1}} {
		if bob[i].Seq != uint64(i+1) || bob[i].Conversation != w.conv || bob[i].ConversationSeq != w.seq || bob[i].Sender != "alice" {
			t.Fatalf("bob entry %d: %+v", i, bob[i])
		}
	}
	if seq, _ := h.f.Delivered("bob", "c"); seq != 2 {
		t.Fatalf("bob's mark for c is %d", seq)
	}
}

func TestLightDeliveriesCarryNoPayload(t *testing.T) {
	h := newHarness(t)
	it := item("bob", "c", 1, "big")
	it.Light = true
	h.apply(deliverCmd(10, it))
	e := h.pullAll("bob")
	if len(e) != 1 || len(e[0].Payload) != 0 || !e[0].Light || e[0].ConversationSeq != 1 {
		t.Fatalf("light entry %+v", e)
	}
}

func TestDeliverOutsideTheRangesWritesNothing(t *testing.T) {
	h := newHarness(t)
	h.apply(&fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: &fsmpb.SetRanges{MapVersion: 1, Ranges: []*fsmpb.SlotRange{{Start: 0, End: 1}}}}})
	before := h.digest()
	rs := h.apply(deliverCmd(10, item("bob", "c", 1, "m")))
	if !errors.Is(rs[0].Err, ErrWrongGroup) {
		t.Fatalf("deliver outside ranges: %v", rs[0].Err)
	}
	if h.digest() != before {
		t.Fatal("a refused deliver changed the state")
	}
}

func TestBadConversationCommandsChangeNothing(t *testing.T) {
	many := make([]string, MaxRecipients)
	for i := range many {
		many[i] = fmt.Sprint("u", i)
	}
	cases := []struct {
		name string
		cmd  *fsmpb.Command
	}{
		{"send without conversation", sendCmd("", "alice", nil, "x", "", 1, 0)},
		{"send without sender", sendCmd("c", "", nil, "x", "", 1, 0)},
		{"send to a bad recipient", sendCmd("c", "alice", []string{"bob", ""}, "x", "", 1, 0)},
		{"send to too many", sendCmd("c", "alice", many, "x", "", 1, 0)},
		{"empty deliver", deliverCmd(1)},
		{"deliver without conversation seq", deliverCmd(1, item("bob", "c", 0, "x"))},
		{"deliver to a bad timeline", deliverCmd(1, item("bob", "c", 1, "x"), item("", "c", 1, "x"))},
		{"empty trim", &fsmpb.Command{Op: &fsmpb.Command_Trim{Trim: &fsmpb.Trim{}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			before := h.digest()
			if rs := h.apply(tc.cmd); !errors.Is(rs[0].Err, ErrInvalidArgument) {
				t.Fatalf("got %v, want invalid argument", rs[0].Err)
			}
			if h.digest() != before {
				t.Fatal("a rejected command changed the state")
			}
		})
	}
}

func trimCmd(tl string, keepFrom uint64) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_Trim{Trim: &fsmpb.Trim{Items: []*fsmpb.TrimItem{{Timeline: tl, KeepFrom: keepFrom}}}}}
}

func TestTrimKeepsSeqsAndAnswersReset(t *testing.T) {
	h := newHarness(t)
	for i := range 10 {
		h.apply(appendCmd("t", fmt.Sprint(i), "", int64(i)))
	}
	h.apply(trimCmd("t", 5))
	res, err := h.f.Pull("t", 0, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != PullReset || res.Oldest != 5 || res.Head != 10 {
		t.Fatalf("pull below the oldest: %+v", res)
	}
	if res, _ := h.f.Pull("t", 4, 100, 0); res.Status != PullOK || len(res.Entries) != 6 || res.Entries[0].Seq != 5 {
		t.Fatalf("pull from the oldest: %+v", res)
	}
	// Trimming never goes back, and an append after it continues the seqs.
	h.apply(trimCmd("t", 3))
	if r := h.apply(appendCmd("t", "next", "", 100))[0]; r.Append.Seq != 11 {
		t.Fatalf("append after trim got seq %d", r.Append.Seq)
	}
	// Trimming everything keeps the head: the oldest becomes head+1.
	h.apply(trimCmd("t", 1000))
	res, _ = h.f.Pull("t", 3, 100, 0)
	if res.Status != PullReset || res.Oldest != 12 || res.Head != 11 || len(res.Entries) != 0 {
		t.Fatalf("pull of an emptied timeline: %+v", res)
	}
	if res, _ := h.f.Pull("t", 11, 100, 0); res.Status != PullUpToDate {
		t.Fatalf("pull at the head of an emptied timeline: %+v", res)
	}
	if r := h.apply(appendCmd("t", "after", "", 101))[0]; r.Append.Seq != 12 {
		t.Fatalf("append after emptying got seq %d", r.Append.Seq)
	}
}

func TestRetentionCandidatesByAgeAndCount(t *testing.T) {
	h := newHarness(t)
	for i := range 10 {
		h.apply(appendCmd("old", fmt.Sprint(i), "", int64(i*100))) // ts 0..900
		h.apply(appendCmd("many", fmt.Sprint(i), "", 5000))
	}
	h.apply(sendCmd("conv", "alice", nil, "x", "", 0, 0))
	policy := RetentionPolicy{
		User:         Retention{MaxAgeMs: 1000, MaxEntries: 4},
		Conversation: Retention{}, // keep everything
	}
	cands, last, err := h.f.RetentionCandidates(policy, 1550, "", 100, 100)
	if err != nil {
		t.Fatal(err)
	}
	// At 1550 entries older than 550 go: seqs 1..6 of "old" (ts 0..500); the
	// count keeps the last 4 of both (7..10).
	want := map[string]uint64{"old": 7, "many": 7}
	if last != "" || len(cands) != len(want) {
		t.Fatalf("candidates %+v (last %q), want %v", cands, last, want)
	}
	for _, c := range cands {
		if want[c.Timeline] != c.KeepFrom {
			t.Fatalf("candidate %+v, want keep from %d", c, want[c.Timeline])
		}
	}
	// The scan resumes where it stopped.
	first, last, _ := h.f.RetentionCandidates(policy, 1550, "", 100, 1)
	rest, end, _ := h.f.RetentionCandidates(policy, 1550, last, 100, 100)
	if last == "" || end != "" || len(first)+len(rest) != 2 {
		t.Fatalf("resumed scan: %+v / %+v (last %q, end %q)", first, rest, last, end)
	}
}

func TestHistoryPagesBackwardsToTheOldest(t *testing.T) {
	h := newHarness(t)
	for i := range 25 {
		h.apply(appendCmd("t", fmt.Sprint(i+1), "", int64(i)))
	}
	h.apply(trimCmd("t", 4)) // 4..25 kept
	var got []uint64
	before := uint64(0)
	for page := 0; ; page++ {
		res, err := h.f.History("t", before, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		if page > 5 {
			t.Fatal("history does not end")
		}
		for i, e := range res.Entries {
			if i > 0 && e.Seq != res.Entries[i-1].Seq+1 {
				t.Fatalf("page %d not contiguous: %+v", page, res.Entries)
			}
		}
		if len(got) > 0 && len(res.Entries) > 0 && res.Entries[len(res.Entries)-1].Seq+1 != got[0] {
			t.Fatalf("page %d does not join the previous one", page)
		}
		seqs := make([]uint64, len(res.Entries))
		for i, e := range res.Entries {
			seqs[i] = e.Seq
		}
		got = append(seqs, got...)
		if res.Status == HistoryEnd {
			break
		}
		if res.Status != HistoryMore {
			t.Fatalf("page %d: status %v", page, res.Status)
		}
		before = res.Entries[0].Seq
	}
	if len(got) != 22 || got[0] != 4 || got[21] != 25 {
		t.Fatalf("history read %v", got)
	}
	cases := []struct {
		before uint64
		status HistoryStatus
		n      int
	}{
		{4, HistoryEnd, 0},   // at the oldest: nothing older is kept
		{2, HistoryReset, 0}, // below it: trimmed away
		{100, HistoryMore, 10},
		{5, HistoryEnd, 1},
	}
	for _, c := range cases {
		res, err := h.f.History("t", c.before, 10, 0)
		if err != nil || res.Status != c.status || len(res.Entries) != c.n || res.Oldest != 4 || res.Head != 25 {
			t.Fatalf("history before %d: %+v %v, want %v with %d entries", c.before, res, err, c.status, c.n)
		}
	}
	if res, _ := h.f.History("empty", 0, 10, 0); res.Status != HistoryEnd || len(res.Entries) != 0 {
		t.Fatalf("history of an empty timeline: %+v", res)
	}
}

func TestOnApplyReportsHeadsAndOutbox(t *testing.T) {
	h := newHarness(t)
	var got []Changes
	h.f.opts.OnApply = func(c Changes) { got = append(got, c) }
	h.apply(appendCmd("a", "x", "", 1), sendCmd("c", "alice", []string{"bob"}, "y", "", 2, 0))
	h.apply(appendCmd("", "rejected", "", 3))
	h.digest() // a read commits what was applied; OnApply runs at the commit
	if len(got) != 1 || got[0].Heads["a"] != 1 || got[0].Heads["c"] != 1 || !got[0].Outbox {
		t.Fatalf("changes %+v", got)
	}
}
