package fsm

import "github.com/syncstore/syncstore/shard"

// RepairPlan is what a restore raises, per group, so that the two ends of
// every delivery chain and every copy chain agree (restore_marks.go).
type RepairPlan struct {
	Groups map[shard.GroupID]*DeliveryRepair
	// Ahead counts members holding deliveries their conversation does not
	// know; Behind, members lacking deliveries their conversation made.
	Ahead, Behind int
}

// PlanRepairs decides the raises from what every group of a backup holds:
// marks (conversation -> member -> the member's mark), queues (per
// conversation) and copied (source collection -> the highest version a
// target copied). groupFor names the group a timeline or collection lives
// on.
//
// A member the conversation queued messages for but whose timeline holds
// no mark at all (its group was cut before the first delivery) is a
// member at mark zero: it is planned like any other, or the outbox's next
// delivery to it would be a gap, refused forever, and hold up the
// conversation's fan-out to every member behind it.
func PlanRepairs(marks map[string]map[string]DeliveryMark, queues map[string]ConversationQueue, copied map[string]uint64, groupFor func(string) shard.GroupID) RepairPlan {
	plan := RepairPlan{Groups: map[shard.GroupID]*DeliveryRepair{}}
	repair := func(id shard.GroupID) *DeliveryRepair {
		if plan.Groups[id] == nil {
			plan.Groups[id] = &DeliveryRepair{Heads: map[string]uint64{}, Queued: map[string]map[string]uint64{}, Marks: map[string]map[string]uint64{}, Collections: map[string]uint64{}}
		}
		return plan.Groups[id]
	}
	plan1 := func(conv, member string, q ConversationQueue, m DeliveryMark) {
		queued, dm := q.Queued[member], m.DeliverySeq
		switch {
		case dm > queued: // the member holds deliveries its conversation does not know
			r := repair(groupFor(conv))
			if r.Queued[conv] == nil {
				r.Queued[conv] = map[string]uint64{}
			}
			r.Queued[conv][member] = max(r.Queued[conv][member], dm)
			r.Heads[conv] = max(r.Heads[conv], m.ConversationSeq)
			plan.Ahead++
		case dm < queued: // deliveries the conversation made, lost with the member's cut
			target := queued
			if p := q.Pending[member]; p > 0 {
				target = p - 1 // the outbox still delivers from p on
			}
			if dm < target {
				r := repair(groupFor(member))
				if r.Marks[member] == nil {
					r.Marks[member] = map[string]uint64{}
				}
				r.Marks[member][conv] = max(r.Marks[member][conv], target)
				plan.Behind++
			}
		}
	}
	for conv, ms := range marks {
		q := queues[conv] // zero: the conversation's group holds none of its sends
		for member, m := range ms {
			plan1(conv, member, q, m)
		}
	}
	for conv, q := range queues {
		for member := range q.Queued {
			if _, ok := marks[conv][member]; !ok {
				plan1(conv, member, q, DeliveryMark{})
			}
		}
	}
	for source, v := range copied {
		r := repair(groupFor(source))
		r.Collections[source] = max(r.Collections[source], v)
	}
	return plan
}
