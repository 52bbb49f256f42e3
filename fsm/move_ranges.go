package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// Errors of slot moves.
var (
	// ErrMoving: the slot is fenced while its range moves to another group.
	// Nothing was written; the write succeeds once the move has switched
	// (at the new group) or been aborted (here), so callers retry.
	ErrMoving = errors.New("fsm: slot range is moving to another group")
	// ErrMoveConflict: a move step that does not fit the move's recorded
	// state (a stale or repeated chunk, a switch of a move not copied, an
	// abort after the switch). Nothing was changed.
	ErrMoveConflict = errors.New("fsm: move step conflicts with the move's state")
)

// Limits of slot moves.
const (
	// MaxMoveItems bounds the keys one MoveImport carries.
	MaxMoveItems = 16384
	// MaxMoveCleanupKeys bounds the keys one MoveCleanup deletes.
	MaxMoveCleanupKeys = 16384
	// maxBoltKey is bbolt's key size limit.
	maxBoltKey = 32768
)

// moveBuckets are the buckets keyed slot first: a slot range is one key
// range in each, and these are what a move copies. Their order is the
// bulk copy's (MoveCursor.bucket indexes it) and is fixed forever.
var moveBuckets = [][]byte{bucketTimelines, bucketOutbox, bucketCollections, bucketRecordOutbox, bucketDevices}

// slotSet is a set of slots.
type slotSet [shard.SlotCount]bool

// RangesFromProto converts slot ranges of a command.
func RangesFromProto(pb []*fsmpb.SlotRange) []shard.Range {
	out := make([]shard.Range, 0, len(pb))
	for _, r := range pb {
		out = append(out, shard.Range{Start: r.GetStart(), End: r.GetEnd()})
	}
	return out
}

// RangesToProto converts slot ranges for a command.
func RangesToProto(rs []shard.Range) []*fsmpb.SlotRange {
	out := make([]*fsmpb.SlotRange, 0, len(rs))
	for _, r := range rs {
		out = append(out, &fsmpb.SlotRange{Start: r.Start, End: r.End})
	}
	return out
}

// validateSlotRanges checks ranges: at least one (unless empty is
// allowed), each within the slot space and non-empty, none overlapping.
func validateSlotRanges(what string, pb []*fsmpb.SlotRange, allowEmpty bool) error {
	if len(pb) == 0 && !allowEmpty {
		return fmt.Errorf("%w: %s: no slot range", ErrInvalidArgument, what)
	}
	if n := len(pb); n > shard.SlotCount {
		return fmt.Errorf("%w: %s: %d slot ranges; the limit is %d", ErrInvalidArgument, what, n, shard.SlotCount)
	}
	var set slotSet
	for _, r := range pb {
		if r.GetStart() >= r.GetEnd() || r.GetEnd() > shard.SlotCount {
			return fmt.Errorf("%w: %s: slot range [%d,%d)", ErrInvalidArgument, what, r.GetStart(), r.GetEnd())
		}
		for s := r.GetStart(); s < r.GetEnd(); s++ {
			if set[s] {
				return fmt.Errorf("%w: %s: slot %d is in two ranges", ErrInvalidArgument, what, s)
			}
			set[s] = true
		}
	}
	return nil
}

func (s *slotSet) add(rs []shard.Range) {
	for _, r := range rs {
		for i := r.Start; i < r.End && i < shard.SlotCount; i++ {
			s[i] = true
		}
	}
}

func (s *slotSet) remove(rs []shard.Range) {
	for _, r := range rs {
		for i := r.Start; i < r.End && i < shard.SlotCount; i++ {
			s[i] = false
		}
	}
}

// containsAll reports whether every slot of rs is in s.
func (s *slotSet) containsAll(rs []shard.Range) bool {
	for _, r := range rs {
		for i := r.Start; i < r.End; i++ {
			if !s[i] {
				return false
			}
		}
	}
	return true
}

// firstOf returns the first slot of rs in s.
func (s *slotSet) firstOf(rs []shard.Range) (uint32, bool) {
	for _, r := range rs {
		for i := r.Start; i < r.End; i++ {
			if s[i] {
				return i, true
			}
		}
	}
	return 0, false
}

// ranges returns s as sorted, merged ranges.
func (s *slotSet) ranges() []shard.Range {
	var out []shard.Range
	for i := uint32(0); i < shard.SlotCount; i++ {
		if !s[i] {
			continue
		}
		j := i
		for j < shard.SlotCount && s[j] {
			j++
		}
		out = append(out, shard.Range{Start: i, End: j})
		i = j
	}
	return out
}

func setOf(rs []shard.Range) *slotSet {
	var s slotSet
	s.add(rs)
	return &s
}

// sortedRanges returns rs sorted by start.
func sortedRanges(rs []shard.Range) []shard.Range {
	out := slices.Clone(rs)
	slices.SortFunc(out, func(a, b shard.Range) int { return int(a.Start) - int(b.Start) })
	return out
}

// slotPrefix is the first two bytes of every key of slot s in a move
// bucket.
func slotPrefix(s uint32) []byte { return binary.BigEndian.AppendUint16(nil, uint16(s)) }

// slotOfKey is the slot a move bucket's key belongs to.
func slotOfKey(k []byte) (uint32, bool) {
	if len(k) < 2 {
		return 0, false
	}
	return uint32(binary.BigEndian.Uint16(k)), true
}

func inRanges(s uint32, rs []shard.Range) bool {
	for _, r := range rs {
		if s >= r.Start && s < r.End {
			return true
		}
	}
	return false
}

// ErrUnknownMove: no move has that id.
var ErrUnknownMove = errors.New("fsm: no such move")
