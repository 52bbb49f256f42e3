package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// SendResult is the outcome of a Send.
type SendResult struct {
	// Seq and TsMs of the message in the conversation.
	Seq  uint64
	TsMs int64
	// Deduplicated: the idempotency key was applied before; nothing new was
	// written or queued.
	Deduplicated bool
	// Recipients is how many user timelines the message is queued for (the
	// sender's included); Light says they get entries without the payload.
	Recipients int
	Light      bool
}

// DeliverResult is the outcome of a Deliver.
type DeliverResult struct {
	// Written entries; Skipped items the timeline had received already.
	Written, Skipped int
}

// Recipients returns the user timelines a Send delivers to: the recipients
// in the order given, without repeats, then the sender if not listed.
func Recipients(sender string, recipients []string) []string {
	out := make([]string, 0, len(recipients)+1)
	seen := make(map[string]bool, len(recipients)+1)
	for _, r := range append(slices.Clip(recipients), sender) {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

func applySend(root *bolt.Bucket, ch *Changes, nowMs int64, s *fsmpb.Send) (*SendResult, error) {
	if err := ValidateSend(s); err != nil {
		return nil, reject(err)
	}
	if err := checkOwned(root, s.GetConversation()); err != nil {
		return nil, err
	}
	if err := gcDedupe(root, nowMs-s.GetDedupeWindowMs()); err != nil {
		return nil, err
	}
	tl := timelineKey(s.GetConversation())
	dk, dup, err := lookupDedupe(root, tl, s.GetIdempotencyKey(), nowMs, s.GetDedupeWindowMs())
	if err != nil {
		return nil, err
	}
	recipients := Recipients(s.GetSender(), s.GetRecipients())
	light := s.GetLightAbove() > 0 && len(recipients) > int(s.GetLightAbove())
	if dup != nil {
		return &SendResult{Seq: dup.Seq, TsMs: dup.TsMs, Deduplicated: true, Recipients: len(recipients), Light: light}, nil
	}

	tlb := sealed{root.Bucket(bucketTimelines)}
	info, err := readInfo(tlb, tl)
	if err != nil {
		return nil, err
	}
	if info.GetClass() != fsmpb.TimelineClass_TIMELINE_CLASS_CONVERSATION {
		info.Class = fsmpb.TimelineClass_TIMELINE_CLASS_CONVERSATION
		if err := writeInfo(tlb, tl, info); err != nil {
			return nil, err
		}
	}
	seq, ts, err := appendEntry(root, ch, s.GetConversation(), nowMs, &fsmpb.StoredEntry{
		Payload:        s.GetPayload(),
		IdempotencyKey: s.GetIdempotencyKey(),
		Metadata:       s.GetMetadata(),
		Sender:         s.GetSender(),
	})
	if err != nil {
		return nil, err
	}
	if err := recordDedupe(root, dk, seq, ts); err != nil {
		return nil, err
	}
	deliverySeqs, err := nextDeliverySeqs(tlb, tl, recipients)
	if err != nil {
		return nil, err
	}
	job, err := stored.Marshal(&fsmpb.OutboxJob{
		Conversation:    s.GetConversation(),
		ConversationSeq: seq,
		Sender:          s.GetSender(),
		Recipients:      recipients,
		Light:           light,
		DeliverySeqs:    deliverySeqs,
	})
	if err != nil {
		return nil, fmt.Errorf("encode outbox job: %w", err)
	}
	if err := (sealed{root.Bucket(bucketOutbox)}).Put(outboxKey(s.GetConversation(), seq), job); err != nil {
		return nil, err
	}
	ch.Outbox = true
	return &SendResult{Seq: seq, TsMs: ts, Recipients: len(recipients), Light: light}, nil
}

// nextDeliverySeqs counts the message for each recipient: the n-th message
// of the conversation queued for a member gets delivery seq n. The counters
// live in the conversation's key range (kindQueued), so a Send dirties the
// pages of one conversation only.
func nextDeliverySeqs(tlb sealed, conv []byte, recipients []string) ([]uint64, error) {
	out := make([]uint64, len(recipients))
	for i, r := range recipients {
		k := queuedKey(conv, r)
		n, err := tlb.GetU64(k)
		if err != nil {
			return nil, err
		}
		n++
		if err := tlb.Put(k, u64(n)); err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// deliveryMark is what a timeline last received from one conversation,
// and how much of it its user has read.
type deliveryMark struct {
	convSeq     uint64 // the conversation seq of that message
	deliverySeq uint64 // its delivery seq: how many messages it has received from the conversation
	// The unread count (unread.go): the read marker, the messages of other
	// senders received, and how many of those are at or below the marker.
	readSeq, others, othersRead uint64
}

// Sizes of a stored mark: delivery only (schemas 3 to 5), and with the
// read state (schema 6).
const (
	markDeliveryBytes = 16
	markReadBytes     = 40
)

// readMark reads a mark (zero when the timeline received nothing from the
// conversation yet).
func readMark(tlb sealed, k []byte) (deliveryMark, error) {
	v, err := tlb.Get(k)
	if err != nil {
		return deliveryMark{}, err
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(v[8*i:]) }
	switch len(v) {
	case 0:
		return deliveryMark{}, nil
	case markDeliveryBytes:
		return deliveryMark{convSeq: u(0), deliverySeq: u(1)}, nil
	case markReadBytes:
		return deliveryMark{convSeq: u(0), deliverySeq: u(1), readSeq: u(2), others: u(3), othersRead: u(4)}, nil
	default:
		return deliveryMark{}, fmt.Errorf("%w: delivery mark %x is %d bytes", ErrCorruptState, k, len(v))
	}
}

func writeMark(tlb sealed, k []byte, m deliveryMark) error {
	v := make([]byte, 0, markReadBytes)
	for _, x := range []uint64{m.convSeq, m.deliverySeq, m.readSeq, m.others, m.othersRead} {
		v = binary.BigEndian.AppendUint64(v, x)
	}
	return tlb.Put(k, v)
}

// applyDeliver writes each item once and in order. A timeline remembers,
// per conversation, the last message it received (its conversation seq and
// delivery seq). An item at or below that is a re-delivery and is skipped;
// an item whose delivery seq is the mark's + 1 is written; any other item
// jumps past a message the timeline has not received, so the whole command
// is refused before anything is written. A forged item can thus at most
// take the place of the one message whose delivery seq it guessed; it can
// never make the timeline skip the messages after it. The outbox delivers one
// conversation's messages in order, so the mark is exact, and it never
// expires (unlike dedupe records).
func applyDeliver(root *bolt.Bucket, ch *Changes, nowMs int64, d *fsmpb.Deliver) (*DeliverResult, error) {
	if err := ValidateDeliver(d); err != nil {
		return nil, reject(err)
	}
	for _, it := range d.GetItems() {
		if err := checkOwned(root, it.GetTimeline()); err != nil {
			return nil, err // refuse the whole batch: the deliverer re-routes it
		}
	}
	tlb := sealed{root.Bucket(bucketTimelines)}
	// First pass: decide every item against the marks as they will be when
	// it is reached (an item may follow another of the same timeline and
	// conversation in this command), writing nothing.
	marks := map[string]deliveryMark{}
	writeKeys := make([][]byte, len(d.GetItems())) // the mark key of each item to write; nil: skip
	for i, it := range d.GetItems() {
		wk := deliveredKey(timelineKey(it.GetTimeline()), it.GetConversation())
		m, ok := marks[string(wk)]
		if !ok {
			var err error
			if m, err = readMark(tlb, wk); err != nil {
				return nil, err
			}
		}
		// Only the delivery seq decides: it is dense per member, so a gap is
		// visible, and a forged conversation seq cannot hide later messages.
		switch {
		case it.GetDeliverySeq() <= m.deliverySeq:
			continue // received already
		case it.GetDeliverySeq() != m.deliverySeq+1:
			return nil, reject(fmt.Errorf("%w: item %d for %q is delivery %d of conversation %q (seq %d); the timeline has received %d (seq %d)",
				ErrDeliveryGap, i, truncate(it.GetTimeline()), it.GetDeliverySeq(), truncate(it.GetConversation()), it.GetConversationSeq(), m.deliverySeq, m.convSeq))
		}
		marks[string(wk)] = deliveryMark{convSeq: it.GetConversationSeq(), deliverySeq: it.GetDeliverySeq()}
		writeKeys[i] = wk
	}
	res := &DeliverResult{}
	for i, it := range d.GetItems() {
		if writeKeys[i] == nil {
			res.Skipped++
			continue
		}
		se := &fsmpb.StoredEntry{
			Metadata:        it.GetMetadata(),
			Sender:          it.GetSender(),
			Conversation:    it.GetConversation(),
			ConversationSeq: it.GetConversationSeq(),
			Light:           it.GetLight(),
		}
		if !it.GetLight() {
			se.Payload = it.GetPayload()
		}
		_, ts, err := appendEntry(root, ch, it.GetTimeline(), nowMs, se)
		if err != nil {
			return nil, err
		}
		mark, err := readMark(tlb, writeKeys[i]) // as an earlier item of this command left it
		if err != nil {
			return nil, err
		}
		mark.convSeq, mark.deliverySeq = it.GetConversationSeq(), it.GetDeliverySeq()
		if err := noteDelivered(root, ch, tlb, &mark, it.GetTimeline(), it.GetConversation(), it.GetSender(), ts, nowMs); err != nil {
			return nil, err
		}
		if err := writeMark(tlb, writeKeys[i], mark); err != nil {
			return nil, err
		}
		res.Written++
	}
	return res, nil
}

func applyDeliveryDone(root *bolt.Bucket, d *fsmpb.DeliveryDone) error {
	if err := ValidateDeliveryDone(d); err != nil {
		return reject(err)
	}
	if err := checkOwned(root, d.GetConversation()); err != nil {
		return err
	}
	return sealed{root.Bucket(bucketOutbox)}.Delete(outboxKey(d.GetConversation(), d.GetConversationSeq()))
}

// OutboxJob is a message still to be delivered to its recipients.
type OutboxJob struct {
	Conversation    string
	ConversationSeq uint64
	Sender          string
	Recipients      []string
	// DeliverySeqs[i] is the message's delivery seq for Recipients[i]
	// (empty for a job queued before delivery seqs existed).
	DeliverySeqs []uint64
	Light        bool
}

// OutboxConversations lists up to limit conversations with pending jobs,
// in key order.
func (f *FSM) OutboxConversations(limit int) ([]string, error) {
	var out []string
	err := f.view(func(root *bolt.Bucket) error {
		c := root.Bucket(bucketOutbox).Cursor()
		for k, _ := c.First(); k != nil && len(out) < limit; {
			var job fsmpb.OutboxJob
			v, err := unseal(k, c.Bucket().Get(k))
			if err != nil {
				return err
			}
			if err := proto.Unmarshal(v, &job); err != nil {
				return fmt.Errorf("decode outbox job %x: %w", k, err)
			}
			out = append(out, job.GetConversation())
			// Skip the rest of this conversation's jobs.
			k, _ = c.Seek(outboxKey(job.GetConversation(), math.MaxUint64))
			if k != nil && bytes.Equal(k, outboxKey(job.GetConversation(), math.MaxUint64)) {
				k, _ = c.Next()
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: outbox: %w", err)
	}
	return out, nil
}

// Outbox lists up to limit pending jobs of a conversation, in conversation
// order.
func (f *FSM) Outbox(conversation string, limit int) ([]OutboxJob, error) {
	var jobs []OutboxJob
	err := f.view(func(root *bolt.Bucket) error {
		prefix := timelineKey(conversation)
		c := root.Bucket(bucketOutbox).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 && len(jobs) < limit; k, v = c.Next() {
			var pb fsmpb.OutboxJob
			raw, err := unseal(k, v)
			if err != nil {
				return err
			}
			if err := proto.Unmarshal(raw, &pb); err != nil {
				return fmt.Errorf("decode outbox job %x: %w", k, err)
			}
			jobs = append(jobs, OutboxJob{
				Conversation:    pb.GetConversation(),
				ConversationSeq: pb.GetConversationSeq(),
				Sender:          pb.GetSender(),
				Recipients:      pb.GetRecipients(),
				DeliverySeqs:    pb.GetDeliverySeqs(),
				Light:           pb.GetLight(),
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: outbox of %q: %w", conversation, err)
	}
	return jobs, nil
}

// Delivered returns the last conversation seq the timeline received from
// the conversation (0: none).
func (f *FSM) Delivered(timeline, conversation string) (uint64, error) {
	var m deliveryMark
	err := f.view(func(root *bolt.Bucket) (err error) {
		m, err = readMark(sealed{root.Bucket(bucketTimelines)}, deliveredKey(timelineKey(timeline), conversation))
		return err
	})
	return m.convSeq, err
}
