package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// Unread counts. The delivery mark of (user timeline, conversation) also
// holds the user's read state of it: the read marker, how many messages of
// other senders were delivered (others) and how many of those are at or
// below the marker (othersRead); unread = others - othersRead. A delivered
// message of another sender above the marker also gets an unread-index key
// in the timeline's range (its conversation seq -> others after it), so
// that a MarkRead finds how many are at or below its seq with one seek:
// O(1) per delivery and per mark, exact, and the user's own messages never
// count. Index keys at or below the marker are spent; each delivery and
// mark removes a bounded number. Keeping it all in the timeline's key
// range means a delivery dirties the pages it dirtied before, plus the
// conversation list's.

// ConversationSummary is one record of a user's conversation list.
type ConversationSummary struct {
	Conversation string
	LastSeq      uint64
	LastSender   string
	LastTsMs     int64
	Unread       uint64
	ReadSeq      uint64
}

func summaryOf(conversation string, s *fsmpb.ConversationSummary) ConversationSummary {
	return ConversationSummary{Conversation: conversation, LastSeq: s.GetLastSeq(), LastSender: s.GetLastSender(),
		LastTsMs: s.GetLastTsMs(), Unread: s.GetUnread(), ReadSeq: s.GetReadSeq()}
}

func unreadPrefix(tl []byte, conversation string) []byte {
	return kindKey(tl, kindUnread, lenPrefixed(conversation))
}

func unreadKey(tl []byte, conversation string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(unreadPrefix(tl, conversation), seq)
}

// readSummary is the user's conversation-list record of a conversation
// (empty when none was delivered yet).
func readSummary(root *bolt.Bucket, user, conversation string) (*fsmpb.ConversationSummary, error) {
	cb := sealed{root.Bucket(bucketCollections)}
	rec, err := readRecord(cb, recordKey(collectionKey(shard.ConversationsCollection(user)), conversation))
	if err != nil || rec == nil || rec.GetDeleted() {
		return &fsmpb.ConversationSummary{}, err
	}
	var s fsmpb.ConversationSummary
	if err := proto.Unmarshal(rec.GetValue(), &s); err != nil {
		return nil, fmt.Errorf("%w: decode conversation summary of %q: %v", ErrCorruptState, truncate(conversation), err)
	}
	return &s, nil
}

func writeSummary(root *bolt.Bucket, ch *Changes, user, conversation string, nowMs int64, s *fsmpb.ConversationSummary) error {
	v, err := stored.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode conversation summary: %w", err)
	}
	return writeDerived(root, ch, shard.ConversationsCollection(user), nowMs, []*fsmpb.RecordOp{{Key: conversation, Value: v}})
}

// noteDelivered counts a message just delivered into the user's timeline
// in its mark m (which the caller writes) and rewrites the user's
// conversation-list record, in the delivery's transaction. Deliveries of
// one conversation arrive in conversation order.
func noteDelivered(root *bolt.Bucket, ch *Changes, tlb sealed, m *deliveryMark, user, conversation, sender string, tsMs, nowMs int64) error {
	tl := timelineKey(user)
	if sender != user {
		m.others++
		if m.convSeq <= m.readSeq {
			m.othersRead++ // read (through the conversation's history) before it arrived
		} else if err := tlb.Put(unreadKey(tl, conversation, m.convSeq), u64(m.others)); err != nil {
			return err
		}
		if err := gcUnread(tlb, tl, conversation, m.readSeq, 2); err != nil {
			return err
		}
	}
	return writeSummary(root, ch, user, conversation, nowMs, &fsmpb.ConversationSummary{
		LastSeq: m.convSeq, LastSender: sender, LastTsMs: tsMs,
		Unread: m.others - m.othersRead, ReadSeq: m.readSeq,
	})
}

// gcUnread removes up to n spent unread-index keys (at or below readSeq).
func gcUnread(tlb sealed, tl []byte, conversation string, readSeq uint64, n int) error {
	return deleteKeys(tlb, prefixedKeys(tlb, unreadPrefix(tl, conversation), n, func(seq []byte) bool {
		return len(seq) == 8 && binary.BigEndian.Uint64(seq) <= readSeq
	}))
}

// MarkReadResult is the outcome of a MarkRead: the conversation's record
// as it stands (ReadSeq is the marker stored; Advanced says it moved).
type MarkReadResult struct {
	Summary  ConversationSummary
	Advanced bool
}

// applyMarkRead raises the read marker to seq, clamped to the last
// message delivered to the user from the conversation (a marker never
// passes what the user's timeline holds), and recomputes the unread count
// with one seek in the unread index. A lower seq changes nothing.
func applyMarkRead(root *bolt.Bucket, ch *Changes, nowMs int64, mr *fsmpb.MarkRead) (*MarkReadResult, error) {
	if err := ValidateMarkRead(mr); err != nil {
		return nil, reject(err)
	}
	if err := checkOwned(root, mr.GetUser()); err != nil {
		return nil, err
	}
	tlb := sealed{root.Bucket(bucketTimelines)}
	tl := timelineKey(mr.GetUser())
	mk := deliveredKey(tl, mr.GetConversation())
	m, err := readMark(tlb, mk)
	if err != nil {
		return nil, err
	}
	sum, err := readSummary(root, mr.GetUser(), mr.GetConversation())
	if err != nil {
		return nil, err
	}
	seq := min(mr.GetSeq(), m.convSeq)
	if seq <= m.readSeq {
		return &MarkReadResult{Summary: summaryOf(mr.GetConversation(), sum)}, nil
	}
	// The newest index key at or below seq says how many of the others'
	// messages are read; none above the old marker means none of the
	// newly read ones was another sender's.
	prefix := unreadPrefix(tl, mr.GetConversation())
	c := tlb.b.Cursor()
	k, v := c.Seek(unreadKey(tl, mr.GetConversation(), seq+1))
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = prevKey(c, k) // not c.Prev: see prevKey
	}
	if k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 && binary.BigEndian.Uint64(k[len(prefix):]) > m.readSeq {
		raw, err := unseal(k, v)
		if err != nil {
			return nil, err
		}
		if len(raw) != 8 {
			return nil, fmt.Errorf("%w: unread index value at %x is %d bytes", ErrCorruptState, k, len(raw))
		}
		m.othersRead = binary.BigEndian.Uint64(raw)
	}
	m.readSeq = seq
	if err := writeMark(tlb, mk, m); err != nil {
		return nil, err
	}
	if err := gcUnread(tlb, tl, mr.GetConversation(), seq, unreadGCPerCommand); err != nil {
		return nil, err
	}
	sum.Unread, sum.ReadSeq = m.others-m.othersRead, seq
	if err := writeSummary(root, ch, mr.GetUser(), mr.GetConversation(), nowMs, sum); err != nil {
		return nil, err
	}
	return &MarkReadResult{Summary: summaryOf(mr.GetConversation(), sum), Advanced: true}, nil
}
