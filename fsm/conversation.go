package fsm

import (
	"bytes"
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

func applySend(tx *bolt.Tx, ch *Changes, nowMs int64, s *fsmpb.Send) (*SendResult, error) {
	if err := ValidateSend(s); err != nil {
		return nil, reject(err)
	}
	if err := checkOwned(tx, s.GetConversation()); err != nil {
		return nil, err
	}
	if err := gcDedupe(tx, nowMs-s.GetDedupeWindowMs()); err != nil {
		return nil, err
	}
	tl := timelineKey(s.GetConversation())
	dk, dup, err := lookupDedupe(tx, tl, s.GetIdempotencyKey(), nowMs, s.GetDedupeWindowMs())
	if err != nil {
		return nil, err
	}
	recipients := Recipients(s.GetSender(), s.GetRecipients())
	light := s.GetLightAbove() > 0 && len(recipients) > int(s.GetLightAbove())
	if dup != nil {
		return &SendResult{Seq: dup.Seq, TsMs: dup.TsMs, Deduplicated: true, Recipients: len(recipients), Light: light}, nil
	}

	tlb := tx.Bucket(bucketTimelines)
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
	seq, ts, err := appendEntry(tx, ch, s.GetConversation(), nowMs, &fsmpb.StoredEntry{
		Payload:        s.GetPayload(),
		IdempotencyKey: s.GetIdempotencyKey(),
		Metadata:       s.GetMetadata(),
		Sender:         s.GetSender(),
	})
	if err != nil {
		return nil, err
	}
	if err := recordDedupe(tx, dk, seq, ts); err != nil {
		return nil, err
	}
	job, err := proto.Marshal(&fsmpb.OutboxJob{
		Conversation:    s.GetConversation(),
		ConversationSeq: seq,
		Sender:          s.GetSender(),
		Recipients:      recipients,
		Light:           light,
	})
	if err != nil {
		return nil, fmt.Errorf("encode outbox job: %w", err)
	}
	if err := tx.Bucket(bucketOutbox).Put(outboxKey(s.GetConversation(), seq), job); err != nil {
		return nil, err
	}
	ch.Outbox = true
	return &SendResult{Seq: seq, TsMs: ts, Recipients: len(recipients), Light: light}, nil
}

// applyDeliver writes each item once: a timeline remembers the last
// conversation seq it received from each conversation and skips items at or
// below it. The outbox delivers one conversation's messages in order, so
// that mark is exact, and it never expires (unlike dedupe records).
func applyDeliver(tx *bolt.Tx, ch *Changes, nowMs int64, d *fsmpb.Deliver) (*DeliverResult, error) {
	if err := ValidateDeliver(d); err != nil {
		return nil, reject(err)
	}
	for _, it := range d.GetItems() {
		if err := checkOwned(tx, it.GetTimeline()); err != nil {
			return nil, err // refuse the whole batch: the deliverer re-routes it
		}
	}
	res := &DeliverResult{}
	tlb := tx.Bucket(bucketTimelines)
	for _, it := range d.GetItems() {
		wk := deliveredKey(timelineKey(it.GetTimeline()), it.GetConversation())
		if readU64(tlb, wk) >= it.GetConversationSeq() {
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
		if _, _, err := appendEntry(tx, ch, it.GetTimeline(), nowMs, se); err != nil {
			return nil, err
		}
		if err := tlb.Put(wk, u64(it.GetConversationSeq())); err != nil {
			return nil, err
		}
		res.Written++
	}
	return res, nil
}

func applyDeliveryDone(tx *bolt.Tx, d *fsmpb.DeliveryDone) error {
	if err := ValidateTimelineID(d.GetConversation()); err != nil {
		return reject(err)
	}
	return tx.Bucket(bucketOutbox).Delete(outboxKey(d.GetConversation(), d.GetConversationSeq()))
}

// OutboxJob is a message still to be delivered to its recipients.
type OutboxJob struct {
	Conversation    string
	ConversationSeq uint64
	Sender          string
	Recipients      []string
	Light           bool
}

// OutboxConversations lists up to limit conversations with pending jobs,
// in key order.
func (f *FSM) OutboxConversations(limit int) ([]string, error) {
	var out []string
	err := f.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, _ := c.First(); k != nil && len(out) < limit; {
			var job fsmpb.OutboxJob
			if err := proto.Unmarshal(c.Bucket().Get(k), &job); err != nil {
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
	err := f.view(func(tx *bolt.Tx) error {
		prefix := timelineKey(conversation)
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 && len(jobs) < limit; k, v = c.Next() {
			var pb fsmpb.OutboxJob
			if err := proto.Unmarshal(v, &pb); err != nil {
				return fmt.Errorf("decode outbox job %x: %w", k, err)
			}
			jobs = append(jobs, OutboxJob{
				Conversation:    pb.GetConversation(),
				ConversationSeq: pb.GetConversationSeq(),
				Sender:          pb.GetSender(),
				Recipients:      pb.GetRecipients(),
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
	var seq uint64
	err := f.view(func(tx *bolt.Tx) error {
		seq = readU64(tx.Bucket(bucketTimelines), deliveredKey(timelineKey(timeline), conversation))
		return nil
	})
	return seq, err
}
