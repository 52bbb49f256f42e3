package fsm

import (
	"maps"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// TestDeliveryChainReadAndRepaired: a restore reads both ends of a
// conversation's deliveries (the conversation's head, delivery counts and
// pending jobs; the members' marks) and raises them, never lowers them.
func TestDeliveryChainReadAndRepaired(t *testing.T) {
	h := newHarness(t)
	for i := range 3 {
		h.mustOK(sendCmd("c", "alice", []string{"bob", "carol"}, "m", "", int64(10+i), 0))
	}
	h.mustOK(deliverCmd(20, item("bob", "c", 1, "m"), item("bob", "c", 2, "m")),
		&fsmpb.Command{NowMs: 21, Op: &fsmpb.Command_DeliveryDone{DeliveryDone: &fsmpb.DeliveryDone{Conversation: "c", ConversationSeq: 1}}})

	queues := func() map[string]ConversationQueue {
		out := map[string]ConversationQueue{}
		if err := h.f.ConversationQueues(func(conv string, q ConversationQueue) error { out[conv] = q; return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	marks := func() map[string]DeliveryMark {
		out := map[string]DeliveryMark{}
		if err := h.f.DeliveryMarks(func(member, conv string, m DeliveryMark) error { out[member+"/"+conv] = m; return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	q := queues()["c"]
	if q.Head != 3 || !maps.Equal(q.Queued, map[string]uint64{"alice": 3, "bob": 3, "carol": 3}) ||
		!maps.Equal(q.Pending, map[string]uint64{"alice": 2, "bob": 2, "carol": 2}) || len(queues()) != 1 {
		t.Fatalf("queues %+v", queues())
	}
	if m := marks(); !maps.Equal(m, map[string]DeliveryMark{"bob/c": {ConversationSeq: 2, DeliverySeq: 2}}) {
		t.Fatalf("marks %+v", m)
	}

	before := h.digest()
	if err := h.f.RepairDeliveries(DeliveryRepair{Heads: map[string]uint64{"c": 1}, Queued: map[string]map[string]uint64{"c": {"bob": 1}},
		Marks: map[string]map[string]uint64{"bob": {"c": 1}}}); err != nil {
		t.Fatal(err)
	}
	if h.digest() != before {
		t.Fatal("a repair to lower counters changed the state")
	}
	err := h.f.RepairDeliveries(DeliveryRepair{Heads: map[string]uint64{"c": 5}, Queued: map[string]map[string]uint64{"c": {"bob": 6}},
		Marks: map[string]map[string]uint64{"bob": {"c": 4}, "carol": {"c": 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if q := queues()["c"]; q.Head != 5 || q.Queued["bob"] != 6 || q.Queued["carol"] != 3 {
		t.Fatalf("queues after the repair %+v", q)
	}
	if m := marks(); m["bob/c"] != (DeliveryMark{ConversationSeq: 2, DeliverySeq: 4}) || m["carol/c"].DeliverySeq != 3 {
		t.Fatalf("marks after the repair %+v", m)
	}
	r := h.mustOK(sendCmd("c", "alice", []string{"bob"}, "after", "", 30, 0))[0]
	if r.Send.Seq != 6 {
		t.Fatalf("the next send got seq %d, want 6 (after the raised head)", r.Send.Seq)
	}
	// bob's next delivery is his 7th; his mark, raised to 4, refuses it as
	// a gap until 5 and 6 come, and skips delivery 4 as received.
	res := h.apply(deliverCmd(31, &fsmpb.DeliveryItem{Timeline: "bob", Conversation: "c", ConversationSeq: 3, DeliverySeq: 4, Sender: "alice"}))[0]
	if res.Err != nil || res.Deliver.Skipped != 1 {
		t.Fatalf("delivery 4 after the mark was raised to 4: %+v %v", res.Deliver, res.Err)
	}
}

// TestCopiedVersionsRaiseTheirSource: the highest source version a target
// copied is read back per source, and a repair raises the source's version
// to it, so its next write takes a version no target has copied.
func TestCopiedVersionsRaiseTheirSource(t *testing.T) {
	h := newHarness(t)
	h.mustOK(copyCmd(
		&fsmpb.CopyItem{Collection: "members/g1", Key: "alice", Value: []byte("a"), Source: "profile/alice", SourceVersion: 3},
		&fsmpb.CopyItem{Collection: "friends/bob", Key: "alice", Value: []byte("a"), Source: "profile/alice", SourceVersion: 5},
		&fsmpb.CopyItem{Collection: "friends/bob", Key: "carol", Value: []byte("c"), Source: "profile/carol", SourceVersion: 2},
	))
	got, err := h.f.CopiedVersions()
	if err != nil || !maps.Equal(got, map[string]uint64{"profile/alice": 5, "profile/carol": 2}) {
		t.Fatalf("copied versions %v, %v", got, err)
	}
	h.write(writeCmd("profile/alice", 6, put("name", "Alice"))) // version 1
	if err := h.f.RepairDeliveries(DeliveryRepair{Collections: got}); err != nil {
		t.Fatal(err)
	}
	if r := h.write(writeCmd("profile/alice", 7, put("name", "Alice B"))); r.Version != 6 {
		t.Fatalf("the next write of the raised source is version %d, want 6", r.Version)
	}
	if r := h.write(writeCmd("profile/carol", 8, put("name", "Carol"))); r.Version != 3 {
		t.Fatalf("the first write of a source raised before it existed is version %d, want 3", r.Version)
	}
}

// TestDeliveryRepairEmpty: a repair holding only one kind of raise is not
// empty (a restore skips empty repairs, so a collection-only one must not
// count as empty).
func TestDeliveryRepairEmpty(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    DeliveryRepair
		want bool
	}{
		{"nothing", DeliveryRepair{Heads: map[string]uint64{}, Queued: map[string]map[string]uint64{}}, true},
		{"a head", DeliveryRepair{Heads: map[string]uint64{"c": 3}}, false},
		{"a queued count", DeliveryRepair{Queued: map[string]map[string]uint64{"c": {"u": 2}}}, false},
		{"a mark", DeliveryRepair{Marks: map[string]map[string]uint64{"u": {"c": 2}}}, false},
		{"a collection", DeliveryRepair{Collections: map[string]uint64{"coll": 7}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.Empty(); got != tc.want {
				t.Fatalf("Empty() = %v, want %v", got, tc.want)
			}
		})
	}
}
