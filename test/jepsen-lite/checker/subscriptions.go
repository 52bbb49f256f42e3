package checker

import (
	"maps"
	"slices"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// Subscriptions: every consumer received each seq of each timeline it
// followed at most once and in order, with the entry the replicas hold at
// that seq, and, after the heal, everything up to the final head.
func Subscriptions(subs []history.Subscription, f history.Final) Verdict {
	v := Verdict{Checker: "subscriptions", Valid: true}
	order := finalOrder(f)
	for _, s := range subs {
		for _, tl := range slices.Sorted(maps.Keys(s.Received)) {
			got := s.Received[tl]
			fin := order[tl].entries
			for i, e := range got {
				switch {
				case e.Seq != uint64(i+1):
					v.problem("consumer %d: %s: delivery %d has seq %d, want %d (duplicate, gap or out of order)", s.Consumer, tl, i+1, e.Seq, i+1)
				case i >= len(fin):
					v.problem("consumer %d: %s: received seq %d, past the final head %d", s.Consumer, tl, e.Seq, len(fin))
				case fin[i].Key != e.Key || fin[i].Payload != e.Payload:
					v.problem("consumer %d: %s: seq %d received as key %s, held as key %s", s.Consumer, tl, e.Seq, e.Key, fin[i].Key)
				default:
					continue
				}
				break
			}
			if len(got) < len(fin) {
				v.problem("consumer %d: %s: received up to seq %d of %d after the heal", s.Consumer, tl, len(got), len(fin))
			}
		}
	}
	return v
}
