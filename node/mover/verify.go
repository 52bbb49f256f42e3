package mover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// The copy is checked slot by slot, and mostly before the fence, so that
// the time the range refuses writes does not grow with its size:
//
//  1. Before the fence, each slot's digest is read at the source together
//     with the end of the move log (in reads of VerifySlots slots), the
//     target is caught up past the highest of those ends, and its digests
//     are read. A slot that the log does not name after the lowest end
//     has not changed at the source since its digest, and nothing more
//     of it reaches the target: its two digests are final.
//  2. While fenced (after the last chunk), only the slots the log names
//     after that end, and those whose digests differed, are read again at
//     both sides. One of them that still differs aborts the move.
//
// A meta leader that takes over a fenced move has no step 1: it checks
// every slot while fenced. So does a move whose log since then is longer
// than one LogSlots read.

// preCheck is what the check before the fence found.
type preCheck struct {
	since  uint64   // the lowest log end read with the source's digests
	differ []uint32 // slots whose digests differed
	slots  int      // slots checked
}

// checkBeforeFence runs step 1.
func (m *Mover) checkBeforeFence(ctx context.Context, rec *fsmpb.MoveRecord) (*preCheck, error) {
	start := time.Now()
	ranges := fsm.RangesFromProto(rec.GetRanges())
	src, since, upTo, err := m.slotDigests(ctx, shard.GroupID(rec.GetSource()), rec.GetId(), ranges)
	if err != nil {
		return nil, err
	}
	sourceRead := time.Now()
	if _, err := m.copy(ctx, rec, false, upTo); err != nil {
		return nil, err
	}
	caughtUp := time.Now()
	dst, _, _, err := m.slotDigests(ctx, shard.GroupID(rec.GetTarget()), 0, ranges)
	if err != nil {
		return nil, err
	}
	pre := &preCheck{since: since, differ: differing(src, dst), slots: len(src)}
	m.log.Info("move checked before its fence", "id", rec.GetId(), "slots", pre.slots, "differing", len(pre.differ),
		"source", sourceRead.Sub(start), "catch_up", caughtUp.Sub(sourceRead), "target", time.Since(caughtUp))
	return pre, nil
}

// checkWhileFenced runs step 2 (or checks every slot without a step 1),
// aborting the move if the copy differs.
func (m *Mover) checkWhileFenced(ctx context.Context, rec *fsmpb.MoveRecord, pre *preCheck) error {
	ranges := fsm.RangesFromProto(rec.GetRanges())
	if pre != nil {
		res, err := m.c.Step(ctx, shard.GroupID(rec.GetSource()), &fsmpb.MoveStep{Step: &fsmpb.MoveStep_LogSlots{LogSlots: &fsmpb.MoveLogSlots{
			MoveId: rec.GetId(), Since: pre.since, MaxEntries: fsm.MaxMoveLogSlotsEntries,
		}}})
		if err != nil {
			return fmt.Errorf("the source's changed slots: %w", err)
		}
		if !res.GetLogTruncated() {
			slots := append(slices.Clone(res.GetLogSlots()), pre.differ...)
			ranges = intersect(rangesOfSlots(slots), ranges)
		}
	}
	if len(ranges) == 0 {
		return nil
	}
	// Both sides at once: this is the part of the check that the fence
	// waits for.
	var src map[uint32]*fsmpb.SlotDigest
	srcErr := make(chan error, 1)
	go func() {
		var err error
		src, _, _, err = m.slotDigests(ctx, shard.GroupID(rec.GetSource()), 0, ranges)
		srcErr <- err
	}()
	dst, _, _, err := m.slotDigests(ctx, shard.GroupID(rec.GetTarget()), 0, ranges)
	if err := errors.Join(<-srcErr, err); err != nil {
		return err
	}
	differ := differing(src, dst)
	m.log.Info("move checked while fenced", "id", rec.GetId(), "slots", shard.Slots(ranges), "differing", len(differ))
	if len(differ) == 0 {
		return nil
	}
	// Never switch to a copy that differs: stop the move.
	m.log.Error("move copy differs from its source: aborting it", "id", rec.GetId(), "slots", len(differ), "first", differ[0])
	if _, err := m.c.ProposeMeta(ctx, &fsmpb.Command{Op: &fsmpb.Command_MoveUpdate{MoveUpdate: &fsmpb.MoveUpdate{Id: rec.GetId(), Abort: true}}}); err != nil {
		return err
	}
	return fmt.Errorf("the copy differs from the source in %d slots (the first %d): aborted", len(differ), differ[0])
}

// slotDigests reads group's slot digests of ranges, VerifySlots slots a
// read, with (for a tracked move id) the lowest and highest log end read.
func (m *Mover) slotDigests(ctx context.Context, group shard.GroupID, id uint64, ranges []shard.Range) (map[uint32]*fsmpb.SlotDigest, uint64, uint64, error) {
	out := map[uint32]*fsmpb.SlotDigest{}
	lowest, highest := ^uint64(0), uint64(0)
	for _, piece := range pieces(ranges, max(1, min(m.cfg.VerifySlots, fsm.MaxDigestSlots))) {
		if !m.c.MetaLeader() {
			return nil, 0, 0, errNotLeader
		}
		res, err := m.c.Step(ctx, group, &fsmpb.MoveStep{Step: &fsmpb.MoveStep_Digest{Digest: &fsmpb.MoveRangeDigest{
			Ranges: fsm.RangesToProto(piece), MoveId: id,
		}}})
		if err != nil {
			return nil, 0, 0, fmt.Errorf("slot digests at group %d: %w", group, err)
		}
		for _, d := range res.GetSlotDigests() {
			out[d.GetSlot()] = d
		}
		lowest, highest = min(lowest, res.GetLogEnd()), max(highest, res.GetLogEnd())
	}
	if lowest > highest {
		lowest = 0
	}
	return out, lowest, highest, nil
}

// differing lists, in order, the slots whose digests (or whose having
// keys at all) differ between a and b.
func differing(a, b map[uint32]*fsmpb.SlotDigest) []uint32 {
	var out []uint32
	for s, da := range a {
		if db, ok := b[s]; !ok || !bytes.Equal(da.GetDigest(), db.GetDigest()) || da.GetKeys() != db.GetKeys() {
			out = append(out, s)
		}
	}
	for s := range b {
		if _, ok := a[s]; !ok {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// pieces cuts ranges into ranges of at most n slots.
func pieces(ranges []shard.Range, n int) [][]shard.Range {
	var out [][]shard.Range
	for _, r := range ranges {
		for s := r.Start; s < r.End; s += uint32(n) {
			out = append(out, []shard.Range{{Start: s, End: min(r.End, s+uint32(n))}})
		}
	}
	return out
}

// rangesOfSlots is the sorted ranges covering slots (repeats allowed).
func rangesOfSlots(slots []uint32) []shard.Range {
	slots = slices.Clone(slots)
	slices.Sort(slots)
	slots = slices.Compact(slots)
	var out []shard.Range
	for _, s := range slots {
		if n := len(out); n > 0 && out[n-1].End == s {
			out[n-1].End++
			continue
		}
		out = append(out, shard.Range{Start: s, End: s + 1})
	}
	return out
}

// intersect is the part of a (sorted, disjoint) inside ranges.
func intersect(a, ranges []shard.Range) []shard.Range {
	var out []shard.Range
	for _, x := range a {
		for _, r := range ranges {
			if lo, hi := max(x.Start, r.Start), min(x.End, r.End); lo < hi {
				out = append(out, shard.Range{Start: lo, End: hi})
			}
		}
	}
	return out
}
