package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/seqgen"
)

// A backup cuts each group at its own index, and a conversation's message
// travels from the conversation's group (its entry, the member's delivery
// count, the outbox job) to each member's group (the delivered mark). The
// two ends of that chain can disagree in a restore:
//
//   - the member's group was cut after a delivery the conversation's group
//     had not yet made (it was cut before the send): the conversation's
//     next message would take a seq and delivery seq the member already
//     holds, and the member would skip it as received;
//   - the member's group was cut before deliveries the conversation's
//     group had finished: its next delivery would jump past the ones it
//     lacks, and be refused as a gap forever.
//
// A restore reads both ends (DeliveryMarks, ConversationQueues) and
// repairs them, only ever raising counters (RepairDeliveries): the
// conversation's head and delivery counts up to what members hold, a
// member's mark up to what the conversation no longer has to deliver.
// README, "What a restore holds", says what each side then sees.

// DeliveryMark is a timeline's last delivery of a conversation.
type DeliveryMark struct {
	ConversationSeq, DeliverySeq uint64
}

// DeliveryMarks calls fn with every delivered mark of this group's
// timelines: the member timeline, the conversation and the mark.
func (f *FSM) DeliveryMarks(fn func(member, conversation string, m DeliveryMark) error) error {
	err := f.view(func(root *bolt.Bucket) error {
		tlb := sealed{root.Bucket(bucketTimelines)}
		c := tlb.b.Cursor()
		for k, _ := c.First(); k != nil; {
			id, ok := timelineIDOf(k)
			if !ok {
				return fmt.Errorf("timeline key %x", k)
			}
			tl := timelineKey(id)
			prefix := kindKey(tl, kindDelivered, nil)
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				m, err := readMark(tlb, k)
				if err != nil {
					return err
				}
				if err := fn(id, string(k[len(prefix):]), DeliveryMark{ConversationSeq: m.convSeq, DeliverySeq: m.deliverySeq}); err != nil {
					return err
				}
			}
			k, _ = c.Seek(timelineEnd(tl))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("fsm: delivery marks: %w", err)
	}
	return nil
}

// ConversationQueue is a conversation's end of its deliveries.
type ConversationQueue struct {
	Head uint64
	// Queued is, per member, how many messages were queued for it (the
	// last delivery seq given).
	Queued map[string]uint64
	// Pending is, per member, the lowest delivery seq an outbox job still
	// has to deliver.
	Pending map[string]uint64
}

// ConversationQueues calls fn for every conversation of this group that
// has queued messages for members.
func (f *FSM) ConversationQueues(fn func(conversation string, q ConversationQueue) error) error {
	err := f.view(func(root *bolt.Bucket) error {
		tlb := sealed{root.Bucket(bucketTimelines)}
		c := tlb.b.Cursor()
		for k, _ := c.First(); k != nil; {
			id, ok := timelineIDOf(k)
			if !ok {
				return fmt.Errorf("timeline key %x", k)
			}
			tl := timelineKey(id)
			q := ConversationQueue{Queued: map[string]uint64{}, Pending: map[string]uint64{}}
			prefix := kindKey(tl, kindQueued, nil)
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				n, err := tlb.GetU64(k)
				if err != nil {
					return err
				}
				q.Queued[string(k[len(prefix):])] = n
			}
			k, _ = c.Seek(timelineEnd(tl))
			if len(q.Queued) == 0 {
				continue
			}
			cur, err := seqgen.Get(tlb, counterKey(tl))
			if err != nil {
				return err
			}
			q.Head = cur.Head
			if err := pendingDeliveries(root, tl, q.Pending); err != nil {
				return err
			}
			if err := fn(id, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("fsm: conversation queues: %w", err)
	}
	return nil
}

// pendingDeliveries records, per recipient, the lowest delivery seq of the
// conversation's outbox jobs.
func pendingDeliveries(root *bolt.Bucket, convKey []byte, out map[string]uint64) error {
	c := root.Bucket(bucketOutbox).Cursor()
	for k, v := c.Seek(convKey); k != nil && bytes.HasPrefix(k, convKey) && len(k) == len(convKey)+8; k, v = c.Next() {
		raw, err := unseal(k, v)
		if err != nil {
			return err
		}
		var job fsmpb.OutboxJob
		if err := proto.Unmarshal(raw, &job); err != nil {
			return fmt.Errorf("decode outbox job %x: %w", k, err)
		}
		for i, r := range job.GetRecipients() {
			if i >= len(job.GetDeliverySeqs()) {
				break
			}
			if d := job.GetDeliverySeqs()[i]; out[r] == 0 || d < out[r] {
				out[r] = d
			}
		}
	}
	return nil
}

// DeliveryRepair raises counters of one group for a restore.
type DeliveryRepair struct {
	// Heads: conversation -> the seq its head is raised to.
	Heads map[string]uint64
	// Queued: conversation -> member -> the delivery count raised to.
	Queued map[string]map[string]uint64
	// Marks: member -> conversation -> the delivery seq its mark is
	// raised to.
	Marks map[string]map[string]uint64
	// Collections: collection -> the version it is raised to.
	Collections map[string]uint64
}

// Empty reports whether r changes nothing.
func (r DeliveryRepair) Empty() bool {
	return len(r.Heads) == 0 && len(r.Queued) == 0 && len(r.Marks) == 0 && len(r.Collections) == 0
}

// RepairDeliveries applies r, raising each counter that is below its
// target and leaving the others. Like RebaseRestoredMeta it writes the
// state directly, outside Raft, for a restore before the group starts.
func (f *FSM) RepairDeliveries(r DeliveryRepair) error {
	err := f.st.Update(func(root *bolt.Bucket) error {
		tlb := sealed{root.Bucket(bucketTimelines)}
		for conv, seq := range r.Heads {
			key := counterKey(timelineKey(conv))
			cur, err := seqgen.Get(tlb, key)
			if err != nil {
				return err
			}
			if cur.Head < seq {
				if err := seqgen.Set(tlb, key, seqgen.Counter{Head: seq, LastTsMs: cur.LastTsMs}); err != nil {
					return err
				}
			}
		}
		for conv, members := range r.Queued {
			for member, n := range members {
				k := queuedKey(timelineKey(conv), member)
				cur, err := tlb.GetU64(k)
				if err != nil {
					return err
				}
				if cur < n {
					if err := tlb.Put(k, u64(n)); err != nil {
						return err
					}
				}
			}
		}
		for member, convs := range r.Marks {
			for conv, n := range convs {
				k := deliveredKey(timelineKey(member), conv)
				m, err := readMark(tlb, k)
				if err != nil {
					return err
				}
				if m.deliverySeq < n {
					m.deliverySeq = n
					if err := writeMark(tlb, k, m); err != nil {
						return err
					}
				}
			}
		}
		return raiseCollectionVersions(root, r.Collections)
	})
	if err != nil {
		return fmt.Errorf("fsm: repair deliveries: %w", err)
	}
	return nil
}

// Record copies have the same two ends: a source collection's write queues
// a copy job, and each target keeps, per source and key, the source
// version it copied (a copy mark). A target cut after a copy its source
// (cut earlier) does not hold would see the source's next write take that
// version again and skip it as copied. A restore raises such a source's
// version to the highest version a target copied (CopiedVersions,
// RepairDeliveries' Collections). A target cut before copies its source
// finished keeps the older record until its key is written again.

// CopiedVersions is, per source collection, the highest source version
// this group's collections hold a copy of.
func (f *FSM) CopiedVersions() (map[string]uint64, error) {
	out := map[string]uint64{}
	err := f.view(func(root *bolt.Bucket) error {
		cb := sealed{root.Bucket(bucketCollections)}
		c := cb.b.Cursor()
		for k, _ := c.First(); k != nil; {
			id, ok := timelineIDOf(k)
			if !ok {
				return fmt.Errorf("collection key %x", k)
			}
			ck := collectionKey(id)
			prefix := kindKey(ck, collKindCopyMark, nil)
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				rest := k[len(prefix):]
				if len(rest) < 2 || len(rest) < 2+int(binary.BigEndian.Uint16(rest)) {
					return fmt.Errorf("copy mark key %x", k)
				}
				source := string(rest[2 : 2+int(binary.BigEndian.Uint16(rest))])
				v, err := cb.GetU64(k)
				if err != nil {
					return err
				}
				out[source] = max(out[source], v)
			}
			k, _ = c.Seek(kindKey(ck, 0xff, nil))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: copied versions: %w", err)
	}
	return out, nil
}

// raiseCollectionVersions raises each collection this group holds whose
// version is below the given one.
func raiseCollectionVersions(root *bolt.Bucket, versions map[string]uint64) error {
	cb := sealed{root.Bucket(bucketCollections)}
	for id, v := range versions {
		ck := collectionKey(id)
		info, err := readCollInfo(cb, ck)
		if err != nil {
			return err
		}
		if info.GetVersion() >= v {
			continue
		}
		info.Version = v
		if err := writeCollInfo(cb, ck, info); err != nil {
			return err
		}
	}
	return nil
}
