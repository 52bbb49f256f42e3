package checker

import (
	"maps"
	"reflect"
	"slices"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// ClassLimit gives a device class's class group and the group's session
// limit (0: none): the login policy the cluster runs.
type ClassLimit func(class string) (group string, limit int)

// OnePerClass is the default policy: one session per class.
func OnePerClass(class string) (string, int) { return class, 1 }

// Sessions: every replica of a user holds the same sessions, events and
// conversation list; no class group holds more active sessions than its
// limit; every ended session has exactly one event (with its reason) and
// an active one none; every session a login acknowledged is active or
// ended with its event, and every session an answer said was ended is;
// cursors (per device and session) and read markers never went back
// between operations one after another; and every conversation list
// record equals the model: the conversation's last message and sender,
// and the count of other senders' messages past the read marker, which
// is at least every marker acknowledged and at most the highest asked.
func Sessions(ops []history.Op, f history.Final, policy ClassLimit) Verdict {
	v := Verdict{Checker: "sessions", Valid: true}
	ref, refNode := map[string]history.UserState{}, map[string]string{}
	for _, node := range slices.Sorted(maps.Keys(f.Users)) {
		for _, user := range slices.Sorted(maps.Keys(f.Users[node])) {
			u := f.Users[node][user]
			if r, ok := ref[user]; !ok {
				ref[user], refNode[user] = u, node
			} else if !reflect.DeepEqual(r, u) {
				v.problem("%s: %s's sessions, events or conversations differ from %s's copy", node, user, refNode[user])
			}
			checkUserState(&v, node, user, u, policy)
		}
	}
	checkSessionHistory(&v, ops, ref)
	checkMonotone(&v, ops, history.Ack, func(op history.Op) string { return op.Timeline + "/" + op.Device + "/" + op.Session }, "cursor")
	checkMonotone(&v, ops, history.MarkRead, func(op history.Op) string { return op.Timeline + "/" + op.Conversation }, "read marker")
	checkUnread(&v, ops, f, ref)
	return v
}

func checkUserState(v *Verdict, node, user string, u history.UserState, policy ClassLimit) {
	inGroup := map[string]int{}
	for _, s := range u.Active {
		g, limit := policy(s.Class)
		if inGroup[g]++; limit > 0 && inGroup[g] > limit {
			v.problem("%s: %s has %d active sessions in class group %s; the limit is %d", node, user, inGroup[g], g, limit)
		}
	}
	events := map[string][]history.SessionState{}
	for _, e := range u.Events {
		events[e.Session] = append(events[e.Session], e)
	}
	for s, es := range events {
		if len(es) > 1 {
			v.problem("%s: %s's session %s has %d end events", node, user, s, len(es))
		}
	}
	for _, s := range u.Active {
		if len(events[s.Session]) > 0 {
			v.problem("%s: %s's session %s is active but has an end event (%s)", node, user, s.Session, events[s.Session][0].Reason)
		}
	}
	for _, s := range u.Ended {
		if es := events[s.Session]; len(es) != 1 || es[0].Reason != s.Reason {
			v.problem("%s: %s's session %s ended (%s) with events %v", node, user, s.Session, s.Reason, es)
		}
	}
}

// checkSessionHistory: what the answers said holds in the final state.
func checkSessionHistory(v *Verdict, ops []history.Op, users map[string]history.UserState) {
	type state struct{ active, events int }
	of := func(user, session string) state {
		var st state
		u := users[user]
		for _, s := range u.Active {
			if s.Session == session {
				st.active++
			}
		}
		for _, e := range u.Events {
			if e.Session == session {
				st.events++
			}
		}
		return st
	}
	for _, op := range ops {
		if op.Outcome != history.OK {
			continue
		}
		switch op.Kind {
		case history.Login:
			if st := of(op.Timeline, op.Key); st.active+st.events != 1 {
				v.problem("%s: session %s (login acknowledged, epoch %d) is active %d times with %d end events", op.Timeline, op.Key, op.Seq, st.active, st.events)
			}
			for _, e := range op.Ended {
				if st := of(op.Timeline, e); st.active != 0 || st.events != 1 {
					v.problem("%s: the login of %s ended %s, which is active %d times with %d end events", op.Timeline, op.Key, e, st.active, st.events)
				}
			}
		case history.Logout:
			if st := of(op.Timeline, op.Key); st.active != 0 || st.events != 1 {
				v.problem("%s: session %s was logged out but is active %d times with %d end events", op.Timeline, op.Key, st.active, st.events)
			}
		}
	}
}

// checkMonotone: for acknowledged ops of kind on one key, an op invoked
// after another completed answered at least as much.
func checkMonotone(v *Verdict, ops []history.Op, kind history.Kind, keyOf func(history.Op) string, what string) {
	byKey := map[string][]history.Op{}
	for _, op := range ops {
		if op.Kind == kind && op.Outcome == history.OK {
			byKey[keyOf(op)] = append(byKey[keyOf(op)], op)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		list := byKey[k]
		for _, b := range list {
			for _, a := range list {
				if a.Complete < b.Invoke && b.Seq < a.Seq {
					v.problem("%s: %s went back from %d (answered at %d) to %d (asked at %d)", k, what, a.Seq, a.Complete, b.Seq, b.Invoke)
				}
			}
		}
	}
}

// checkUnread compares every conversation list with the model computed
// from the conversations' final timelines and the read markers.
func checkUnread(v *Verdict, ops []history.Op, f history.Final, users map[string]history.UserState) {
	members := map[string]map[string]bool{} // conversation -> members
	type rk struct{ user, conv string }
	acked, asked := map[rk]uint64{}, map[rk]uint64{}
	for _, op := range ops {
		switch op.Kind {
		case history.Send:
			if members[op.Timeline] == nil {
				members[op.Timeline] = map[string]bool{}
			}
			for _, m := range op.Members() {
				members[op.Timeline][m] = true
			}
		case history.MarkRead:
			k := rk{op.Timeline, op.Conversation}
			if op.Outcome == history.OK {
				acked[k] = max(acked[k], op.Seq)
			}
			if op.Outcome != history.Fail {
				asked[k] = max(asked[k], op.After)
			}
		}
	}
	convTimeline := func(conv string) []history.Entry {
		for _, node := range slices.Sorted(maps.Keys(f.Timelines)) {
			if es, ok := f.Timelines[node][conv]; ok {
				return es
			}
		}
		return nil
	}
	for _, user := range slices.Sorted(maps.Keys(users)) {
		got := map[string]history.ConversationState{}
		for _, c := range users[user].Conversations {
			got[c.Conversation] = c
		}
		for _, conv := range slices.Sorted(maps.Keys(members)) {
			es := convTimeline(conv)
			c, listed := got[conv]
			if !members[conv][user] || len(es) == 0 {
				if listed {
					v.problem("%s lists %s, which delivered nothing to it", user, conv)
				}
				continue
			}
			if !listed {
				v.problem("%s does not list %s (%d messages)", user, conv, len(es))
				continue
			}
			k := rk{user, conv}
			last := es[len(es)-1]
			if c.ReadSeq < acked[k] || c.ReadSeq > asked[k] || c.ReadSeq > last.Seq {
				v.problem("%s/%s: read marker %d; acknowledged %d, highest asked %d, last message %d", user, conv, c.ReadSeq, acked[k], asked[k], last.Seq)
			}
			var unread uint64
			for _, e := range es {
				if e.Seq > c.ReadSeq && e.Sender != user {
					unread++
				}
			}
			if c.LastSeq != last.Seq || c.LastSender != last.Sender || c.Unread != unread {
				v.problem("%s/%s: listed last %d from %s with %d unread; the conversation ends at %d from %s, %d unread past %d",
					user, conv, c.LastSeq, c.LastSender, c.Unread, last.Seq, last.Sender, unread, c.ReadSeq)
			}
		}
	}
}
