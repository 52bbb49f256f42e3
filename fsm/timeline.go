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

func applyAppend(tx *bolt.Tx, nowMs int64, a *fsmpb.Append) (*AppendResult, error) {
	if err := ValidateAppend(a); err != nil {
		return nil, reject(err)
	}
	owned, err := readRanges(tx)
	if err != nil {
		return nil, err
	}
	if !owned.owns(a.GetTimeline()) {
		return nil, reject(fmt.Errorf("%w: slot %d of %q is not in this group's ranges (map v%d)", ErrWrongGroup, shard.SlotOf(a.GetTimeline()), a.GetTimeline(), owned.mapVersion))
	}
	if err := gcDedupe(tx, nowMs-a.GetDedupeWindowMs()); err != nil {
		return nil, err
	}
	tl := timelineKey(a.GetTimeline())
	tlb := tx.Bucket(bucketTimelines)
	var dk []byte
	if a.GetIdempotencyKey() != "" {
		dk = dedupeKey(tl, a.GetIdempotencyKey())
		if v := tlb.Get(dk); v != nil {
			var rec fsmpb.DedupeRecord
			if err := proto.Unmarshal(v, &rec); err != nil {
				return nil, fmt.Errorf("decode dedupe record: %w", err)
			}
			if nowMs-rec.GetTsMs() <= a.GetDedupeWindowMs() {
				return &AppendResult{Seq: rec.GetSeq(), TsMs: rec.GetTsMs(), Deduplicated: true}, nil
			}
			// Expired but not yet collected: this is a new append; the old
			// expiry key is left for gcDedupe, which checks the timestamp.
		}
	}

	seq, ts, err := seqgen.Next(tlb, counterKey(tl), nowMs)
	if err != nil {
		return nil, err
	}
	v, err := proto.Marshal(&fsmpb.StoredEntry{
		TsMs:           ts,
		Payload:        a.GetPayload(),
		IdempotencyKey: a.GetIdempotencyKey(),
		Metadata:       a.GetMetadata(),
	})
	if err != nil {
		return nil, fmt.Errorf("encode entry: %w", err)
	}
	if err := tlb.Put(entryKey(tl, seq), v); err != nil {
		return nil, err
	}
	if dk != nil {
		rec, err := proto.Marshal(&fsmpb.DedupeRecord{Seq: seq, TsMs: ts})
		if err != nil {
			return nil, fmt.Errorf("encode dedupe record: %w", err)
		}
		if err := tlb.Put(dk, rec); err != nil {
			return nil, err
		}
		if err := tx.Bucket(bucketDedupeExpiry).Put(expiryKey(ts, dk), nil); err != nil {
			return nil, err
		}
	}
	return &AppendResult{Seq: seq, TsMs: ts}, nil
}

// gcDedupe removes up to dedupeGCPerAppend dedupe records written before
// cutoffMs. A record rewritten later (same key, newer timestamp) stays.
func gcDedupe(tx *bolt.Tx, cutoffMs int64) error {
	expiry := tx.Bucket(bucketDedupeExpiry)
	dedupe := tx.Bucket(bucketTimelines)
	var stale [][]byte
	c := expiry.Cursor()
	for k, _ := c.First(); k != nil && len(stale) < dedupeGCPerAppend; k, _ = c.Next() {
		if int64(binary.BigEndian.Uint64(k[:8])) >= cutoffMs {
			break
		}
		stale = append(stale, bytes.Clone(k))
	}
	for _, k := range stale {
		ts, dk := int64(binary.BigEndian.Uint64(k[:8])), k[8:]
		if v := dedupe.Get(dk); v != nil {
			var rec fsmpb.DedupeRecord
			if err := proto.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode dedupe record: %w", err)
			}
			if rec.GetTsMs() == ts {
				if err := dedupe.Delete(dk); err != nil {
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

// PullStatus says how a page relates to the timeline.
type PullStatus int

const (
	// PullOK: the page reaches the head.
	PullOK PullStatus = iota + 1
	// PullUpToDate: after == head; no entries.
	PullUpToDate
	// PullMore: entries remain past this page.
	PullMore
	// PullReset: after is older than the oldest entry kept.
	PullReset
	// PullAhead: after > head.
	PullAhead
)

func (s PullStatus) String() string {
	switch s {
	case PullOK:
		return "OK"
	case PullUpToDate:
		return "UP_TO_DATE"
	case PullMore:
		return "MORE"
	case PullReset:
		return "RESET"
	case PullAhead:
		return "AHEAD"
	}
	return fmt.Sprintf("PullStatus(%d)", int(s))
}

// Entry is one timeline entry as read.
type Entry struct {
	Timeline       string
	Seq            uint64
	TsMs           int64
	Payload        []byte
	IdempotencyKey string
	Metadata       map[string]string
}

// PullResult is a page of a timeline.
type PullResult struct {
	Status  PullStatus
	Entries []Entry
	Head    uint64
	// Oldest is the oldest seq kept; 0 for an empty timeline.
	Oldest uint64
}

// Pull reads up to limit entries with seq > after from the local state. A
// page stops early once its payloads reach maxBytes (0: no byte bound), but
// always holds at least one entry.
func (f *FSM) Pull(timeline string, after uint64, limit, maxBytes int) (PullResult, error) {
	if err := ValidateTimelineID(timeline); err != nil {
		return PullResult{}, err
	}
	if limit < 1 {
		return PullResult{}, fmt.Errorf("%w: limit %d is below 1", ErrInvalidArgument, limit)
	}
	var res PullResult
	err := f.view(func(tx *bolt.Tx) error {
		tlb := tx.Bucket(bucketTimelines)
		tl := timelineKey(timeline)
		ctr, err := seqgen.Get(tlb, counterKey(tl))
		if err != nil {
			return err
		}
		res.Head = ctr.Head
		prefix := entryPrefix(tl)
		c := tlb.Cursor()
		k, v := c.Seek(prefix)
		if k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 {
			res.Oldest = binary.BigEndian.Uint64(k[len(prefix):])
		}
		switch {
		case after > res.Head:
			res.Status = PullAhead
			return nil
		case after == res.Head:
			res.Status = PullUpToDate
			return nil
		case after+1 < res.Oldest:
			res.Status = PullReset
			return nil
		}
		size := 0
		k, v = c.Seek(entryKey(tl, after+1))
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(res.Entries) < limit; k, v = c.Next() {
			e, err := decodeEntry(timeline, k[len(prefix):], v)
			if err != nil {
				return err
			}
			size += len(e.Payload)
			if maxBytes > 0 && size > maxBytes && len(res.Entries) > 0 {
				break
			}
			res.Entries = append(res.Entries, e)
		}
		res.Status = PullOK
		if n := len(res.Entries); n > 0 && res.Entries[n-1].Seq < res.Head {
			res.Status = PullMore
		}
		return nil
	})
	if err != nil {
		return PullResult{}, fmt.Errorf("fsm: pull %q: %w", timeline, err)
	}
	return res, nil
}

// Head returns the newest seq of a timeline from the local state.
func (f *FSM) Head(timeline string) (uint64, error) {
	if err := ValidateTimelineID(timeline); err != nil {
		return 0, err
	}
	var head uint64
	err := f.view(func(tx *bolt.Tx) error {
		ctr, err := seqgen.Get(tx.Bucket(bucketTimelines), counterKey(timelineKey(timeline)))
		head = ctr.Head
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("fsm: head %q: %w", timeline, err)
	}
	return head, nil
}

func decodeEntry(timeline string, seqBytes, v []byte) (Entry, error) {
	var se fsmpb.StoredEntry
	if err := proto.Unmarshal(v, &se); err != nil {
		return Entry{}, fmt.Errorf("decode entry: %w", err)
	}
	return Entry{
		Timeline:       timeline,
		Seq:            binary.BigEndian.Uint64(seqBytes),
		TsMs:           se.GetTsMs(),
		Payload:        se.GetPayload(),
		IdempotencyKey: se.GetIdempotencyKey(),
		Metadata:       se.GetMetadata(),
	}, nil
}
