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

// Retention is how long and how much of a class of timelines is kept; zero
// fields mean no limit.
type Retention struct {
	MaxAgeMs   int64
	MaxEntries uint64
}

// RetentionPolicy has one Retention per timeline class.
type RetentionPolicy struct {
	User, Conversation Retention
}

func (p RetentionPolicy) of(class fsmpb.TimelineClass) Retention {
	if class == fsmpb.TimelineClass_TIMELINE_CLASS_CONVERSATION {
		return p.Conversation
	}
	return p.User
}

// applyTrim drops entries below each item's keep_from, oldest first, at
// most MaxTrimPerItem per item, and raises the timeline's floor to the
// first seq still kept. keep_from is capped at head+1: a trim never reaches
// past the last seq, and the counter stays, so seqs never restart.
func applyTrim(root *bolt.Bucket, t *fsmpb.Trim) error {
	if err := ValidateTrim(t); err != nil {
		return reject(err)
	}
	tlb := sealed{root.Bucket(bucketTimelines)}
	for _, it := range t.GetItems() {
		tl := timelineKey(it.GetTimeline())
		ctr, err := seqgen.Get(tlb, counterKey(tl))
		if err != nil {
			return err
		}
		keepFrom := min(it.GetKeepFrom(), ctr.Head+1)
		info, err := readInfo(tlb, tl)
		if err != nil {
			return err
		}
		if keepFrom <= info.GetFloor() {
			continue
		}
		prefix := entryPrefix(tl)
		var stale [][]byte
		c := tlb.b.Cursor()
		k, _ := c.Seek(prefix)
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(stale) < MaxTrimPerItem; k, _ = c.Next() {
			if binary.BigEndian.Uint64(k[len(prefix):]) >= keepFrom {
				break
			}
			stale = append(stale, bytes.Clone(k))
		}
		for _, k := range stale {
			if err := tlb.Delete(k); err != nil {
				return err
			}
		}
		floor := keepFrom
		if len(stale) == MaxTrimPerItem {
			// Stopped by the bound: everything up to the last dropped is gone.
			floor = min(keepFrom, binary.BigEndian.Uint64(stale[len(stale)-1][len(prefix):])+1)
		}
		if floor > info.GetFloor() {
			info.Floor = floor
			if err := writeInfo(tlb, tl, info); err != nil {
				return err
			}
		}
	}
	return nil
}

// TrimCandidate is a timeline with entries the policy no longer keeps.
type TrimCandidate struct {
	Timeline string
	KeepFrom uint64
}

// RetentionCandidates scans the timelines in key order from startAfter (a
// timeline id; "" for the first) and returns up to limit that have entries
// to drop under policy at nowMs, and the last timeline scanned ("" when the
// scan reached the end), so a caller can resume a long scan. It scans at
// most maxScan timelines per call.
func (f *FSM) RetentionCandidates(policy RetentionPolicy, nowMs int64, startAfter string, limit, maxScan int) (out []TrimCandidate, last string, err error) {
	err = f.view(func(root *bolt.Bucket) error {
		tlb := sealed{root.Bucket(bucketTimelines)}
		c := tlb.b.Cursor()
		var k []byte
		if startAfter == "" {
			k, _ = c.First()
		} else {
			k, _ = c.Seek(timelineEnd(timelineKey(startAfter)))
		}
		for scanned := 0; k != nil && len(out) < limit && scanned < maxScan; scanned++ {
			id, ok := timelineIDOf(k)
			if !ok {
				return fmt.Errorf("malformed timeline key %x", k)
			}
			cand, ok, err := trimCandidate(tlb, id, policy, nowMs)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, cand)
			}
			last = id
			k, _ = c.Seek(timelineEnd(timelineKey(id)))
		}
		if k == nil {
			last = ""
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("fsm: retention scan: %w", err)
	}
	return out, last, nil
}

func trimCandidate(tlb sealed, id string, policy RetentionPolicy, nowMs int64) (TrimCandidate, bool, error) {
	tl := timelineKey(id)
	ctr, err := seqgen.Get(tlb, counterKey(tl))
	if err != nil || ctr.Head == 0 {
		return TrimCandidate{}, false, err
	}
	info, err := readInfo(tlb, tl)
	if err != nil {
		return TrimCandidate{}, false, err
	}
	r := policy.of(info.GetClass())
	var keepFrom uint64
	if r.MaxEntries > 0 && ctr.Head > r.MaxEntries {
		keepFrom = ctr.Head - r.MaxEntries + 1
	}
	prefix := entryPrefix(tl)
	c := tlb.b.Cursor()
	k, v := c.Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return TrimCandidate{}, false, nil // nothing kept
	}
	oldest := binary.BigEndian.Uint64(k[len(prefix):])
	if r.MaxAgeMs > 0 {
		cutoff := nowMs - r.MaxAgeMs
		// Timestamps never decrease along a timeline: walk up to the first
		// entry young enough, at most a command's worth.
		for n := 0; k != nil && bytes.HasPrefix(k, prefix) && n < MaxTrimPerItem; n++ {
			var se fsmpb.StoredEntry
			raw, err := unseal(k, v)
			if err != nil {
				return TrimCandidate{}, false, err
			}
			if err := proto.Unmarshal(raw, &se); err != nil {
				return TrimCandidate{}, false, fmt.Errorf("decode entry of %q: %w", id, err)
			}
			seq := binary.BigEndian.Uint64(k[len(prefix):])
			if se.GetTsMs() >= cutoff {
				break
			}
			keepFrom = max(keepFrom, seq+1)
			k, v = c.Next()
		}
	}
	if keepFrom <= oldest {
		return TrimCandidate{}, false, nil
	}
	return TrimCandidate{Timeline: id, KeepFrom: keepFrom}, true, nil
}
