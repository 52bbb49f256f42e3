package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/seqgen"
	"github.com/syncstore/syncstore/shard"
)

// dedupeGCPerAppend bounds how many expired dedupe records one Append
// removes. It is above one so expiry outpaces insertion.
const dedupeGCPerAppend = 16

// Changes is what one applied batch changed, handed to Options.OnApply
// after the batch's transaction committed (push notifications, outbox).
type Changes struct {
	// Heads maps every timeline that got entries to its new head.
	Heads map[string]uint64
	// Outbox: a Send added a delivery job.
	Outbox bool
	// Collections maps every collection written to its new version.
	Collections map[string]uint64
	// Copies: a collection write queued record copies.
	Copies bool
}

func (c *Changes) collectionMoved(collection string, version uint64) {
	if c.Collections == nil {
		c.Collections = map[string]uint64{}
	}
	c.Collections[collection] = version
}

func (c *Changes) headMoved(timeline string, head uint64) {
	if c.Heads == nil {
		c.Heads = map[string]uint64{}
	}
	c.Heads[timeline] = head
}

func applyAppend(root *bolt.Bucket, ch *Changes, nowMs int64, a *fsmpb.Append) (*AppendResult, error) {
	if err := ValidateAppend(a); err != nil {
		return nil, reject(err)
	}
	if err := checkOwned(root, a.GetTimeline()); err != nil {
		return nil, err
	}
	if err := gcDedupe(root, nowMs-a.GetDedupeWindowMs()); err != nil {
		return nil, err
	}
	tl := timelineKey(a.GetTimeline())
	dk, dup, err := lookupDedupe(root, tl, a.GetIdempotencyKey(), nowMs, a.GetDedupeWindowMs())
	if err != nil || dup != nil {
		return dup, err
	}
	seq, ts, err := appendEntry(root, ch, a.GetTimeline(), nowMs, &fsmpb.StoredEntry{
		Payload:        a.GetPayload(),
		IdempotencyKey: a.GetIdempotencyKey(),
		Metadata:       a.GetMetadata(),
	})
	if err != nil {
		return nil, err
	}
	if err := recordDedupe(root, dk, seq, ts); err != nil {
		return nil, err
	}
	return &AppendResult{Seq: seq, TsMs: ts}, nil
}

// checkOwned rejects a timeline outside the group's slot ranges, or in a
// range fenced for a move.
func checkOwned(root *bolt.Bucket, timeline string) error {
	owned, err := readRanges(root)
	if err != nil {
		return err
	}
	if !owned.owns(timeline) {
		return reject(fmt.Errorf("%w: slot %d of %q is not in this group's ranges (map v%d)", ErrWrongGroup, shard.SlotOf(timeline), timeline, owned.mapVersion))
	}
	if owned.fenced(timeline) {
		return reject(fmt.Errorf("%w: slot %d of %q is fenced; retry", ErrMoving, shard.SlotOf(timeline), timeline))
	}
	return nil
}

// upkeepAllowed reports whether upkeep (trims, compaction) may write to
// id: the group owns it and no move fences it. Upkeep skips the others:
// they are another group's to keep, or will be once the move switches, and
// a fenced range must not change after its last copy.
func (o *ownedRanges) upkeepAllowed(id string) bool { return o.owns(id) && !o.fenced(id) }

// appendEntry allocates the timeline's next seq and stores se under it.
func appendEntry(root *bolt.Bucket, ch *Changes, timeline string, nowMs int64, se *fsmpb.StoredEntry) (seq uint64, tsMs int64, err error) {
	tl := timelineKey(timeline)
	tlb := sealed{root.Bucket(bucketTimelines)}
	seq, ts, err := seqgen.Next(tlb, counterKey(tl), nowMs)
	if err != nil {
		return 0, 0, err
	}
	se.TsMs = ts
	v, err := stored.Marshal(se)
	if err != nil {
		return 0, 0, fmt.Errorf("encode entry: %w", err)
	}
	if err := tlb.Put(entryKey(tl, seq), v); err != nil {
		return 0, 0, err
	}
	ch.headMoved(timeline, seq)
	return seq, ts, nil
}

// lookupDedupe finds an idempotency key applied within the window. dk is
// the record's key (nil without an idempotency key); dup is the original
// result when the key was applied already.
func lookupDedupe(root *bolt.Bucket, tl []byte, key string, nowMs, windowMs int64) (dk []byte, dup *AppendResult, err error) {
	if key == "" {
		return nil, nil, nil
	}
	dk = dedupeKey(tl, key)
	v, err := sealed{root.Bucket(bucketTimelines)}.Get(dk)
	if err != nil || v == nil {
		return dk, nil, err
	}
	var rec fsmpb.DedupeRecord
	if err := proto.Unmarshal(v, &rec); err != nil {
		return nil, nil, fmt.Errorf("decode dedupe record: %w", err)
	}
	if nowMs-rec.GetTsMs() <= windowMs {
		return dk, &AppendResult{Seq: rec.GetSeq(), TsMs: rec.GetTsMs(), Deduplicated: true}, nil
	}
	// Expired but not yet collected: this is a new append; the old expiry
	// key is left for gcDedupe, which checks the timestamp.
	return dk, nil, nil
}

// recordDedupe remembers that the key at dk produced seq (no-op for nil dk).
func recordDedupe(root *bolt.Bucket, dk []byte, seq uint64, tsMs int64) error {
	if dk == nil {
		return nil
	}
	rec, err := stored.Marshal(&fsmpb.DedupeRecord{Seq: seq, TsMs: tsMs})
	if err != nil {
		return fmt.Errorf("encode dedupe record: %w", err)
	}
	if err := (sealed{root.Bucket(bucketTimelines)}).Put(dk, rec); err != nil {
		return err
	}
	return sealed{root.Bucket(bucketDedupeExpiry)}.Put(expiryKey(tsMs, dk), nil)
}

// gcDedupe removes up to dedupeGCPerAppend timeline dedupe records
// written before cutoffMs (see gcDedupeIn).
func gcDedupe(root *bolt.Bucket, cutoffMs int64) error {
	return gcDedupeIn(root, bucketDedupeExpiry, bucketTimelines, cutoffMs, func(v []byte) (int64, error) {
		var rec fsmpb.DedupeRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			return 0, fmt.Errorf("decode dedupe record: %w", err)
		}
		return rec.GetTsMs(), nil
	})
}

// gcDedupeIn removes up to dedupeGCPerAppend dedupe records of the bucket
// named records written before cutoffMs, found through the expiry index
// named expiryName; tsOf decodes a record's time. A record rewritten later
// (same key, newer time) stays.
func gcDedupeIn(root *bolt.Bucket, expiryName, records []byte, cutoffMs int64, tsOf func(v []byte) (int64, error)) error {
	expiry := root.Bucket(expiryName)
	rb := sealed{root.Bucket(records)}
	var stale [][]byte
	c := expiry.Cursor()
	for k, _ := c.First(); k != nil && len(stale) < dedupeGCPerAppend; k, _ = c.Next() {
		if int64(binary.BigEndian.Uint64(k[:8])) >= cutoffMs {
			break
		}
		stale = append(stale, bytes.Clone(k))
	}
	owned, err := readRanges(root)
	if err != nil {
		return err
	}
	for _, k := range stale {
		ts, dk := int64(binary.BigEndian.Uint64(k[:8])), k[8:]
		if s, ok := slotOfKey(dk); ok && owned.fencedSlot(s) {
			continue // a fenced range must not change after its last copy
		}
		v, err := rb.Get(dk)
		if err != nil {
			return err
		}
		if v != nil {
			recTs, err := tsOf(v)
			if err != nil {
				return err
			}
			if recTs == ts {
				if err := rb.Delete(dk); err != nil {
					return err
				}
			}
		}
		if err := expiry.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// readInfo returns a timeline's info (zero: a user timeline never trimmed).
func readInfo(tlb sealed, tl []byte) (*fsmpb.TimelineInfo, error) {
	info := &fsmpb.TimelineInfo{}
	v, err := tlb.Get(infoKey(tl))
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := proto.Unmarshal(v, info); err != nil {
			return nil, fmt.Errorf("decode timeline info: %w", err)
		}
	}
	return info, nil
}

func writeInfo(tlb sealed, tl []byte, info *fsmpb.TimelineInfo) error {
	v, err := stored.Marshal(info)
	if err != nil {
		return fmt.Errorf("encode timeline info: %w", err)
	}
	return tlb.Put(infoKey(tl), v)
}
