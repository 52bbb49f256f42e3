package checker

import (
	"maps"
	"slices"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// FanOut: every message a conversation holds was delivered to each of its
// members' timelines exactly once (whether its Send was acknowledged or its
// outcome unknown), carrying the message's payload and sender; each
// member's deliveries from one conversation are in conversation order; and
// no member timeline holds a delivery of a message the conversation lacks.
// It checks every replica's copy.
func FanOut(ops []history.Op, f history.Final) Verdict {
	v := Verdict{Checker: "fan-out", Valid: true}
	sends := map[string]history.Op{} // conversation + key -> its Send
	convs := map[string]bool{}
	for _, op := range ops {
		if op.Kind == history.Send {
			sends[op.Timeline+"\x00"+op.Key] = op
			convs[op.Timeline] = true
		}
	}
	for _, node := range slices.Sorted(maps.Keys(f.Timelines)) {
		tls := f.Timelines[node]
		// What each conversation holds, as this node's replica (or, for a
		// conversation on a group this node does not host, the first
		// replica that does) has it.
		held := map[string][]history.Entry{}
		for conv := range convs {
			held[conv] = conversationCopy(f, node, conv)
		}
		// Deliveries each member timeline holds: conversation -> seqs.
		for _, tl := range slices.Sorted(maps.Keys(tls)) {
			if convs[tl] {
				continue
			}
			last := map[string]uint64{}
			for _, e := range tls[tl] {
				if e.Conversation == "" {
					continue
				}
				if e.ConversationSeq <= last[e.Conversation] {
					v.problem("%s: %s: delivery of %s #%d after #%d (duplicate or out of order)", node, tl, e.Conversation, e.ConversationSeq, last[e.Conversation])
				}
				last[e.Conversation] = max(last[e.Conversation], e.ConversationSeq)
				msgs, known := held[e.Conversation]
				if known && (e.ConversationSeq == 0 || e.ConversationSeq > uint64(len(msgs))) {
					v.problem("%s: %s: delivery of %s #%d, which the conversation does not hold", node, tl, e.Conversation, e.ConversationSeq)
					continue
				}
				if known {
					if m := msgs[e.ConversationSeq-1]; m.Payload != e.Payload || m.Sender != e.Sender {
						v.problem("%s: %s: delivery of %s #%d carries %q from %q; the message is %q from %q", node, tl, e.Conversation, e.ConversationSeq, e.Payload, e.Sender, m.Payload, m.Sender)
					}
				}
			}
		}
		// Each held message reached each of its members once.
		for _, conv := range slices.Sorted(maps.Keys(held)) {
			for _, m := range held[conv] {
				send, ok := sends[conv+"\x00"+m.Key]
				if !ok {
					v.problem("%s: %s #%d (key %s) matches no Send of the history", node, conv, m.Seq, m.Key)
					continue
				}
				for _, member := range send.Members() {
					entries, hosted := tls[member]
					if !hosted {
						continue // this node holds no replica of the member's timeline
					}
					n := 0
					for _, e := range entries {
						if e.Conversation == conv && e.ConversationSeq == m.Seq {
							n++
						}
					}
					if n != 1 {
						v.problem("%s: %s holds %s #%d %d times, want once", node, member, conv, m.Seq, n)
					}
				}
			}
		}
	}
	return v
}

// conversationCopy is node's copy of a conversation, else the first
// replica's (in node order) that holds it.
func conversationCopy(f history.Final, node, conv string) []history.Entry {
	if es, ok := f.Timelines[node][conv]; ok {
		return es
	}
	for _, n := range slices.Sorted(maps.Keys(f.Timelines)) {
		if es, ok := f.Timelines[n][conv]; ok {
			return es
		}
	}
	return nil
}
