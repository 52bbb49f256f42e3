package fsm

import (
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// Unread counts. For each (user, conversation) the user's group keeps a
// ReadState: the read marker, how many messages of other senders were
// delivered (others) and how many of those are at or below the marker
// (others_read); unread = others - others_read. A delivered message of
// another sender above the marker also gets an unread-index key (its
// conversation seq -> others after it), so that a MarkRead finds how many
// are at or below its seq with one seek: O(1) per delivery and per mark,
// exact, and the user's own messages never count. Index keys at or below
// the marker are spent; each delivery and mark removes a bounded number.

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

func readReadState(db sealed, k []byte) (*fsmpb.ReadState, error) {
	rs := &fsmpb.ReadState{}
	v, err := db.Get(k)
	if err != nil || v == nil {
		return rs, err
	}
	if err := proto.Unmarshal(v, rs); err != nil {
		return nil, fmt.Errorf("%w: decode read state %x: %v", ErrCorruptState, k, err)
	}
	return rs, nil
}

func writeReadState(db sealed, k []byte, rs *fsmpb.ReadState) error {
	v, err := stored.Marshal(rs)
	if err != nil {
		return fmt.Errorf("encode read state: %w", err)
	}
	return db.Put(k, v)
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

// noteDelivered updates the user's read state and conversation list for a
// message just delivered into the user's timeline, in the delivery's
// transaction. Deliveries of one conversation arrive in conversation order.
func noteDelivered(root *bolt.Bucket, ch *Changes, user, conversation string, convSeq uint64, sender string, tsMs, nowMs int64) error {
	db := sealed{root.Bucket(bucketDevices)}
	uk := timelineKey(user)
	rk := readStateKey(uk, conversation)
	rs, err := readReadState(db, rk)
	if err != nil {
		return err
	}
	if sender != user {
		rs.Others++
		if convSeq <= rs.GetReadSeq() {
			rs.OthersRead++ // read (through the conversation's history) before it arrived
		} else if err := db.Put(unreadKey(uk, conversation, convSeq), u64(rs.GetOthers())); err != nil {
			return err
		}
		if err := writeReadState(db, rk, rs); err != nil {
			return err
		}
		if err := gcUnread(db, uk, conversation, rs.GetReadSeq(), 2); err != nil {
			return err
		}
	}
	return writeSummary(root, ch, user, conversation, nowMs, &fsmpb.ConversationSummary{
		LastSeq: convSeq, LastSender: sender, LastTsMs: tsMs,
		Unread: rs.GetOthers() - rs.GetOthersRead(), ReadSeq: rs.GetReadSeq(),
	})
}

// gcUnread removes up to n spent unread-index keys (at or below readSeq).
func gcUnread(db sealed, uk []byte, conversation string, readSeq uint64, n int) error {
	prefix := unreadPrefix(uk, conversation)
	var spent [][]byte
	c := db.b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix) && len(spent) < n; k, _ = c.Next() {
		if len(k) != len(prefix)+8 || binary.BigEndian.Uint64(k[len(prefix):]) > readSeq {
			break
		}
		spent = append(spent, slices.Clone(k))
	}
	for _, k := range spent {
		if err := db.Delete(k); err != nil {
			return err
		}
	}
	return nil
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
func applyMarkRead(root *bolt.Bucket, ch *Changes, nowMs int64, m *fsmpb.MarkRead) (*MarkReadResult, error) {
	if err := ValidateMarkRead(m); err != nil {
		return nil, reject(err)
	}
	if err := checkOwned(root, m.GetUser()); err != nil {
		return nil, err
	}
	db := sealed{root.Bucket(bucketDevices)}
	uk := timelineKey(m.GetUser())
	rk := readStateKey(uk, m.GetConversation())
	rs, err := readReadState(db, rk)
	if err != nil {
		return nil, err
	}
	sum, err := readSummary(root, m.GetUser(), m.GetConversation())
	if err != nil {
		return nil, err
	}
	seq := min(m.GetSeq(), sum.GetLastSeq())
	if seq <= rs.GetReadSeq() {
		return &MarkReadResult{Summary: summaryOf(m.GetConversation(), sum)}, nil
	}
	// The newest index key at or below seq says how many of the others'
	// messages are read; none above the old marker means none of the
	// newly read ones was another sender's.
	prefix := unreadPrefix(uk, m.GetConversation())
	c := db.b.Cursor()
	k, v := c.Seek(unreadKey(uk, m.GetConversation(), seq+1))
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if k != nil && hasPrefix(k, prefix) && len(k) == len(prefix)+8 && binary.BigEndian.Uint64(k[len(prefix):]) > rs.GetReadSeq() {
		raw, err := unseal(k, v)
		if err != nil {
			return nil, err
		}
		if len(raw) != 8 {
			return nil, fmt.Errorf("%w: unread index value at %x is %d bytes", ErrCorruptState, k, len(raw))
		}
		rs.OthersRead = binary.BigEndian.Uint64(raw)
	}
	rs.ReadSeq = seq
	if err := writeReadState(db, rk, rs); err != nil {
		return nil, err
	}
	if err := gcUnread(db, uk, m.GetConversation(), seq, unreadGCPerCommand); err != nil {
		return nil, err
	}
	sum.Unread, sum.ReadSeq = rs.GetOthers()-rs.GetOthersRead(), seq
	if err := writeSummary(root, ch, m.GetUser(), m.GetConversation(), nowMs, sum); err != nil {
		return nil, err
	}
	return &MarkReadResult{Summary: summaryOf(m.GetConversation(), sum), Advanced: true}, nil
}
