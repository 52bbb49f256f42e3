package fsm

import (
	"fmt"
	"slices"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// planLines lists a plan's raises, one per line, sorted.
func planLines(p RepairPlan) []string {
	var out []string
	for id, r := range p.Groups {
		for conv, seq := range r.Heads {
			out = append(out, fmt.Sprintf("g%d head %s=%d", id, conv, seq))
		}
		for conv, ms := range r.Queued {
			for m, n := range ms {
				out = append(out, fmt.Sprintf("g%d queued %s/%s=%d", id, conv, m, n))
			}
		}
		for m, cs := range r.Marks {
			for conv, n := range cs {
				out = append(out, fmt.Sprintf("g%d mark %s/%s=%d", id, m, conv, n))
			}
		}
		for c, v := range r.Collections {
			out = append(out, fmt.Sprintf("g%d version %s=%d", id, c, v))
		}
	}
	slices.Sort(out)
	return out
}

func TestPlanRepairs(t *testing.T) {
	groups := map[string]shard.GroupID{"c": 1, "bob": 2, "carol": 3, "profile/x": 4}
	groupFor := func(id string) shard.GroupID { return groups[id] }
	type marks = map[string]map[string]DeliveryMark
	type queues = map[string]ConversationQueue
	for _, tc := range []struct {
		name          string
		marks         marks
		queues        queues
		copied        map[string]uint64
		want          []string
		ahead, behind int
	}{
		{name: "both ends agree", marks: marks{"c": {"bob": {2, 2}}}, queues: queues{"c": {Head: 2, Queued: map[string]uint64{"bob": 2}}}},
		{name: "a member ahead of its conversation", marks: marks{"c": {"bob": {3, 3}}}, queues: queues{"c": {Head: 2, Queued: map[string]uint64{"bob": 2}}},
			want: []string{"g1 head c=3", "g1 queued c/bob=3"}, ahead: 1},
		{name: "a conversation holding none of its sends", marks: marks{"c": {"bob": {2, 2}}},
			want: []string{"g1 head c=2", "g1 queued c/bob=2"}, ahead: 1},
		{name: "a member behind, nothing pending", marks: marks{"c": {"bob": {1, 1}}}, queues: queues{"c": {Head: 3, Queued: map[string]uint64{"bob": 3}}},
			want: []string{"g2 mark bob/c=3"}, behind: 1},
		{name: "a member behind, deliveries pending from 3", marks: marks{"c": {"bob": {1, 1}}},
			queues: queues{"c": {Head: 3, Queued: map[string]uint64{"bob": 3}, Pending: map[string]uint64{"bob": 3}}},
			want:   []string{"g2 mark bob/c=2"}, behind: 1},
		{name: "a member behind only by what is pending", marks: marks{"c": {"bob": {2, 2}}},
			queues: queues{"c": {Head: 3, Queued: map[string]uint64{"bob": 3}, Pending: map[string]uint64{"bob": 3}}}},
		// carol's group was cut before her first delivery, the
		// conversation's after it was done: she holds no mark at all.
		{name: "a member without a mark, its first delivery done", marks: marks{"c": {"bob": {2, 2}}},
			queues: queues{"c": {Head: 2, Queued: map[string]uint64{"bob": 2, "carol": 2}, Pending: map[string]uint64{"bob": 2, "carol": 2}}},
			want:   []string{"g3 mark carol/c=1"}, behind: 1},
		{name: "a member without a mark, every delivery pending",
			queues: queues{"c": {Head: 2, Queued: map[string]uint64{"carol": 2}, Pending: map[string]uint64{"carol": 1}}}},
		{name: "a copied source", copied: map[string]uint64{"profile/x": 5}, want: []string{"g4 version profile/x=5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanRepairs(tc.marks, tc.queues, tc.copied, groupFor)
			if got := planLines(p); !slices.Equal(got, tc.want) || p.Ahead != tc.ahead || p.Behind != tc.behind {
				t.Fatalf("plan %q (ahead %d, behind %d), want %q (ahead %d, behind %d)", got, p.Ahead, p.Behind, tc.want, tc.ahead, tc.behind)
			}
		})
	}
}

// TestUnmarkedMemberTakesItsNextDelivery: a member whose group was cut
// before its first delivery while the conversation's was cut after that
// delivery was done takes the pending second one once repaired; without
// the repair it refuses it as a gap, and the conversation's fan-out, which
// goes in order, would stop there.
func TestUnmarkedMemberTakesItsNextDelivery(t *testing.T) {
	conv, member := newHarness(t), newHarness(t) // the conversation's group; carol's, cut before delivery 1
	conv.mustOK(sendCmd("c", "alice", []string{"carol"}, "m1", "", 10, 0), sendCmd("c", "alice", []string{"carol"}, "m2", "", 11, 0),
		&fsmpb.Command{NowMs: 12, Op: &fsmpb.Command_DeliveryDone{DeliveryDone: &fsmpb.DeliveryDone{Conversation: "c", ConversationSeq: 1}}})
	delivery2 := deliverCmd(20, item("carol", "c", 2, "m2"))
	if res := member.apply(delivery2)[0]; res.Err == nil {
		t.Fatalf("delivery 2 to a timeline that received nothing was taken (%+v): the test would not test the repair", res.Deliver)
	}
	marks := map[string]map[string]DeliveryMark{}
	if err := member.f.DeliveryMarks(func(m, c string, dm DeliveryMark) error {
		marks[c] = map[string]DeliveryMark{m: dm}
		return nil
	}); err != nil || len(marks) != 0 {
		t.Fatalf("marks %v, %v; want none", marks, err)
	}
	queues := map[string]ConversationQueue{}
	if err := conv.f.ConversationQueues(func(c string, q ConversationQueue) error { queues[c] = q; return nil }); err != nil {
		t.Fatal(err)
	}
	plan := PlanRepairs(marks, queues, nil, func(id string) shard.GroupID {
		if id == "c" {
			return 1
		}
		return 2
	})
	if r := plan.Groups[2]; r == nil || r.Empty() {
		t.Fatalf("no repair planned for carol's group: %q", planLines(plan))
	}
	if err := member.f.RepairDeliveries(*plan.Groups[2]); err != nil {
		t.Fatal(err)
	}
	if res := member.apply(delivery2)[0]; res.Err != nil || res.Deliver.Written != 1 {
		t.Fatalf("delivery 2 after the repair: %+v, %v; want it written", res.Deliver, res.Err)
	}
}
