package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/seqgen"
	"github.com/syncstore/syncstore/shard"
)

// Retention is how long and how much of a class of timelines is kept; zero
// fields mean no limit.
type Retention struct {
	MaxAgeMs   int64
	MaxEntries uint64
}

// RetentionPolicy has one Retention per timeline class, and says how
// device cursors hold user timelines back.
type RetentionPolicy struct {
	User, Conversation Retention
	Cursors            CursorRetention
}

// CursorRetention: with Hold, a user timeline (and its device-events
// timeline) is not trimmed past the lowest cursor of the user's active
// devices, except what Cap drops anyway. A device whose session was not
// seen for InactiveAfterMs (0: never inactive) holds nothing back.
type CursorRetention struct {
	Hold            bool
	Cap             Retention
	InactiveAfterMs int64
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
	owned, err := readRanges(root)
	if err != nil {
		return err
	}
	for _, it := range t.GetItems() {
		if !owned.upkeepAllowed(it.GetTimeline()) {
			continue
		}
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
		stale := prefixedKeys(tlb, prefix, MaxTrimPerItem, func(seq []byte) bool { return binary.BigEndian.Uint64(seq) < keepFrom })
		if err := deleteKeys(tlb, stale); err != nil {
			return err
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
			cand, ok, err := trimCandidate(root, tlb, id, policy, nowMs)
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

func trimCandidate(root *bolt.Bucket, tlb sealed, id string, policy RetentionPolicy, nowMs int64) (TrimCandidate, bool, error) {
	tl := timelineKey(id)
	ctr, err := seqgen.Get(tlb, counterKey(tl))
	if err != nil || ctr.Head == 0 {
		return TrimCandidate{}, false, err
	}
	info, err := readInfo(tlb, tl)
	if err != nil {
		return TrimCandidate{}, false, err
	}
	oldest, keepFrom, err := keepFromFor(tlb, tl, id, ctr.Head, policy.of(info.GetClass()), nowMs)
	if err != nil || oldest == 0 {
		return TrimCandidate{}, false, err
	}
	if info.GetClass() == fsmpb.TimelineClass_TIMELINE_CLASS_USER && policy.Cursors.Hold {
		hold, err := cursorHold(root, id, policy.Cursors, nowMs)
		if err != nil {
			return TrimCandidate{}, false, err
		}
		if hold > 0 && hold < keepFrom {
			// A lagging active device keeps its entries, up to the cap.
			_, capFrom, err := keepFromFor(tlb, tl, id, ctr.Head, policy.Cursors.Cap, nowMs)
			if err != nil {
				return TrimCandidate{}, false, err
			}
			keepFrom = max(hold, capFrom)
		}
	}
	if keepFrom <= oldest {
		return TrimCandidate{}, false, nil
	}
	return TrimCandidate{Timeline: id, KeepFrom: keepFrom}, true, nil
}

// keepFromFor is the first seq r keeps of a timeline (entries below it are
// past r's count or age), and the oldest seq kept now (0: none).
func keepFromFor(tlb sealed, tl []byte, id string, head uint64, r Retention, nowMs int64) (oldest, keepFrom uint64, err error) {
	if r.MaxEntries > 0 && head > r.MaxEntries {
		keepFrom = head - r.MaxEntries + 1
	}
	prefix := entryPrefix(tl)
	c := tlb.b.Cursor()
	k, v := c.Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return 0, 0, nil // nothing kept
	}
	oldest = binary.BigEndian.Uint64(k[len(prefix):])
	if r.MaxAgeMs > 0 {
		cutoff := nowMs - r.MaxAgeMs
		// Timestamps never decrease along a timeline: walk up to the first
		// entry young enough, at most a command's worth.
		for n := 0; k != nil && bytes.HasPrefix(k, prefix) && n < MaxTrimPerItem; n++ {
			var se fsmpb.StoredEntry
			raw, err := unseal(k, v)
			if err != nil {
				return 0, 0, err
			}
			if err := proto.Unmarshal(raw, &se); err != nil {
				return 0, 0, fmt.Errorf("decode entry of %q: %w", id, err)
			}
			seq := binary.BigEndian.Uint64(k[len(prefix):])
			if se.GetTsMs() >= cutoff {
				break
			}
			keepFrom = max(keepFrom, seq+1)
			k, v = c.Next()
		}
	}
	return oldest, keepFrom, nil
}

// cursorHold is the first seq of timeline the user's active devices still
// need: the lowest cursor + 1 among devices with an active session seen
// within InactiveAfterMs that acknowledged something on it (0: none holds).
func cursorHold(root *bolt.Bucket, timeline string, cr CursorRetention, nowMs int64) (uint64, error) {
	user := timeline
	if strings.HasPrefix(timeline, shard.DeviceEventsPrefix) {
		user = timeline[len(shard.DeviceEventsPrefix):]
	}
	db := sealed{root.Bucket(bucketDevices)}
	uk := timelineKey(user)
	ds, err := readSessions(db, uk)
	if err != nil {
		return 0, err
	}
	var hold uint64
	for _, s := range ds.GetSessions() { // the active sessions
		if cr.InactiveAfterMs > 0 && nowMs-s.GetLastSeenMs() > cr.InactiveAfterMs {
			continue
		}
		seq, err := db.GetU64(cursorKey(uk, s.GetDeviceId(), timeline))
		if err != nil {
			return 0, err
		}
		if seq > 0 && (hold == 0 || seq+1 < hold) {
			hold = seq + 1
		}
	}
	return hold, nil
}
