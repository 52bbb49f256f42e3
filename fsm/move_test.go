package fsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

func setRangesCmd(version uint64, rs ...shard.Range) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: &fsmpb.SetRanges{MapVersion: version, Ranges: RangesToProto(rs)}}}
}

func moveSourceCmd(id uint64, action fsmpb.MoveSource_Action, rs ...shard.Range) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_MoveSource{MoveSource: &fsmpb.MoveSource{MoveId: id, Ranges: RangesToProto(rs), Action: action}}}
}

func cleanupCmd(id uint64, side fsmpb.MoveCleanup_Side, maxKeys uint32, rs ...shard.Range) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_MoveCleanup{MoveCleanup: &fsmpb.MoveCleanup{MoveId: id, Ranges: RangesToProto(rs), Side: side, MaxKeys: maxKeys}}}
}

// mustOK applies cmds and fails the test on a rejection.
func (h *harness) mustOK(cmds ...*fsmpb.Command) []*Result {
	h.t.Helper()
	rs := h.apply(cmds...)
	for i, r := range rs {
		if r == nil || r.Err != nil {
			h.t.Fatalf("command %d (%v) refused: %v", i, cmds[i].GetOp(), r)
		}
	}
	return rs
}

// moveWorkload writes a random mix of what a group holds: appends with
// idempotency keys (some retried), sends with outbox jobs, collection puts
// and deletes, logins and logouts, trims.
type moveWorkload struct {
	rng  *rand.Rand
	now  int64
	keys []string
}

func (w *moveWorkload) next() *fsmpb.Command {
	w.now += 10
	u := fmt.Sprintf("u%d", w.rng.IntN(40))
	switch w.rng.IntN(7) {
	case 0, 1:
		key := fmt.Sprintf("k%d", w.rng.Uint64())
		if len(w.keys) > 0 && w.rng.IntN(4) == 0 {
			key = w.keys[w.rng.IntN(len(w.keys))] // a retry
		}
		w.keys = append(w.keys, key)
		return appendCmd(u, "p", key, w.now)
	case 2:
		c := fmt.Sprintf("c%d", w.rng.IntN(10))
		return sendCmd(c, u, []string{fmt.Sprintf("u%d", w.rng.IntN(40))}, "m", fmt.Sprintf("s%d", w.rng.Uint64()), w.now, 0)
	case 3:
		return writeCmd(fmt.Sprintf("col%d", w.rng.IntN(10)), w.now, put(fmt.Sprintf("r%d", w.rng.IntN(20)), "v"))
	case 4:
		return writeCmd(fmt.Sprintf("col%d", w.rng.IntN(10)), w.now, del(fmt.Sprintf("r%d", w.rng.IntN(20))))
	case 5:
		return loginCmd(u, fmt.Sprintf("d%d", w.rng.IntN(3)), "phone", fmt.Sprintf("s%d", w.rng.IntN(6)), w.now)
	default:
		return trimCmd(u, uint64(w.rng.IntN(5)))
	}
}

// copyMove runs export/import passes until the target has caught up with
// the log as the source holds it, applying between chunks what write
// returns (nil: nothing).
func copyMove(t *testing.T, src, dst *harness, id uint64, rs []shard.Range, cursor *fsmpb.MoveCursor, write func() []*fsmpb.Command) *fsmpb.MoveCursor {
	t.Helper()
	for range 100000 {
		chunk, err := src.f.ExportMove(id, rs, cursor, 2048)
		if err != nil {
			t.Fatal(err)
		}
		res := dst.mustOK(&fsmpb.Command{Op: &fsmpb.Command_MoveImport{MoveImport: chunk.Import}})
		cursor = res[0].MoveImport.GetCursor()
		if cmds := write(); len(cmds) > 0 {
			src.apply(cmds...)
			continue
		}
		if chunk.CaughtUp() {
			return cursor
		}
	}
	t.Fatal("the copy never caught up")
	return nil
}

func rangeDigest(t *testing.T, h *harness, rs []shard.Range) (string, uint64) {
	t.Helper()
	d, n, err := h.f.RangeDigest(rs)
	if err != nil {
		t.Fatal(err)
	}
	return d, n
}

// TestMoveCopiesExactlyUnderWrites: a source takes random writes while its
// range is copied; once fenced and caught up, the target holds exactly the
// source's keys of the range, serves them (seqs continue, dedupe answers
// retries) and the source can delete them.
func TestMoveCopiesExactlyUnderWrites(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			src, dst := newHarness(t), newHarness(t)
			all, moved, kept := shard.Range{Start: 0, End: shard.SlotCount}, shard.Range{Start: 0, End: 2048}, shard.Range{Start: 2048, End: shard.SlotCount}
			src.mustOK(setRangesCmd(1, all))
			dst.mustOK(setRangesCmd(1))
			w := &moveWorkload{rng: rand.New(rand.NewPCG(seed, 1))}
			for range 600 {
				src.apply(w.next())
			}
			src.mustOK(moveSourceCmd(1, fsmpb.MoveSource_TRACK, moved))
			writes := 0
			cursor := copyMove(t, src, dst, 1, []shard.Range{moved}, &fsmpb.MoveCursor{}, func() []*fsmpb.Command {
				if writes >= 900 {
					return nil
				}
				writes += 3
				return []*fsmpb.Command{w.next(), w.next(), w.next()}
			})
			src.mustOK(moveSourceCmd(1, fsmpb.MoveSource_FENCE, moved))
			// Fenced: requests to the range are refused retriably, the rest
			// of the group goes on.
			fencedTL, keptTL := idInRange(moved), idInRange(kept)
			if r := src.apply(appendCmd(fencedTL, "x", "", w.now))[0]; !errors.Is(r.Err, ErrMoving) {
				t.Fatalf("append to a fenced slot: %v, want ErrMoving", r.Err)
			}
			src.mustOK(appendCmd(keptTL, "x", "", w.now))
			copyMove(t, src, dst, 1, []shard.Range{moved}, cursor, func() []*fsmpb.Command { return nil })
			want, n := rangeDigest(t, src, []shard.Range{moved})
			if got, _ := rangeDigest(t, dst, []shard.Range{moved}); got != want || n == 0 {
				t.Fatalf("target range digest %s, source %s (%d keys)", got, want, n)
			}
			for s := moved.Start; s < moved.End; s += MaxDigestSlots {
				piece := []shard.Range{{Start: s, End: min(moved.End, s+MaxDigestSlots)}}
				want, _, err1 := src.f.SlotDigests(1, piece)
				got, _, err2 := dst.f.SlotDigests(0, piece)
				if err := errors.Join(err1, err2); err != nil {
					t.Fatal(err)
				}
				if !slices.EqualFunc(got, want, func(a, b *fsmpb.SlotDigest) bool { return proto.Equal(a, b) }) {
					t.Fatalf("slot digests of %v differ: target %v, source %v", piece, got, want)
				}
			}

			// The switch: the target owns the range, the source gives it up.
			dst.mustOK(setRangesCmd(2, moved))
			src.mustOK(&fsmpb.Command{Op: &fsmpb.Command_MoveSource{MoveSource: &fsmpb.MoveSource{
				MoveId: 1, Ranges: RangesToProto([]shard.Range{moved}), Action: fsmpb.MoveSource_RELEASE, Disown: true, MapVersion: 2}}})
			if r := src.apply(setRangesCmd(1, all))[0]; r.Err != nil {
				t.Fatal(r.Err)
			}
			if r := src.apply(appendCmd(fencedTL, "x", "", w.now))[0]; !errors.Is(r.Err, ErrWrongGroup) {
				t.Fatalf("append at the source after the switch (and a stale SetRanges): %v, want ErrWrongGroup", r.Err)
			}
			// Until activated the target serves nothing of the range, though
			// it owns it by the map: the source may still answer a read.
			if r := dst.apply(appendCmd(fencedTL, "x", "", w.now))[0]; !errors.Is(r.Err, ErrMoving) {
				t.Fatalf("append at the target before activation: %v, want ErrMoving", r.Err)
			}
			if ok, _ := dst.f.Serves(fencedTL); ok {
				t.Fatal("the target serves reads before activation")
			}
			if ok, _ := src.f.Serves(fencedTL); ok {
				t.Fatal("the source serves reads after disowning")
			}
			dst.mustOK(moveSourceCmd(1, fsmpb.MoveSource_ACTIVATE, moved))
			if ok, _ := dst.f.Serves(fencedTL); !ok {
				t.Fatal("the target does not serve reads once activated")
			}
			// A stale chunk is refused by the target that owns the range.
			if r := dst.apply(&fsmpb.Command{Op: &fsmpb.Command_MoveImport{MoveImport: &fsmpb.MoveImport{MoveId: 1, Ranges: RangesToProto([]shard.Range{moved}), From: cursor}}})[0]; !errors.Is(r.Err, ErrMoveConflict) {
				t.Fatalf("stale import after the switch: %v", r.Err)
			}
			// Seqs continue at head+1 and a retried key keeps its seq.
			head, err := src.f.Head(fencedTL)
			if err != nil {
				t.Fatal(err)
			}
			r := dst.mustOK(appendCmd(fencedTL, "after", "", w.now))[0]
			if r.Append.Seq != head+1 {
				t.Fatalf("first append at the target got seq %d, want %d", r.Append.Seq, head+1)
			}
			checkDedupeMoved(t, src, dst, moved, w)

			for done := false; !done; {
				done = src.mustOK(cleanupCmd(1, fsmpb.MoveCleanup_SOURCE, 100, moved))[0].CleanupDone
			}
			if _, n := rangeDigest(t, src, []shard.Range{moved}); n != 0 {
				t.Fatalf("the source still holds %d keys of the moved range", n)
			}
		})
	}
}

// checkDedupeMoved retries, at the target, an append the source took with
// an idempotency key, and expects the original seq.
func checkDedupeMoved(t *testing.T, src, dst *harness, moved shard.Range, w *moveWorkload) {
	t.Helper()
	for i := range 40 {
		u := fmt.Sprintf("u%d", i)
		if !inRanges(uint32(shard.SlotOf(u)), []shard.Range{moved}) {
			continue
		}
		entries := src.pullAll(u)
		for _, e := range entries {
			if e.IdempotencyKey == "" {
				continue
			}
			r := dst.mustOK(appendCmd(u, "again", e.IdempotencyKey, w.now))[0]
			if !r.Append.Deduplicated || r.Append.Seq != e.Seq {
				t.Fatalf("retry of %s/%s at the target: %+v, want seq %d deduplicated", u, e.IdempotencyKey, r.Append, e.Seq)
			}
			return
		}
	}
	t.Fatal("no keyed append in the moved range to retry")
}

// idInRange finds a timeline id whose slot is in r.
func idInRange(r shard.Range) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("probe%d", i)
		if inRanges(uint32(shard.SlotOf(id)), []shard.Range{r}) {
			return id
		}
	}
}

// TestMoveLogSlots: the slots a move's log names from a position on are
// those written since, and a read stopped short says so.
func TestMoveLogSlots(t *testing.T) {
	h := newHarness(t)
	all, moved, kept := shard.Range{Start: 0, End: shard.SlotCount}, shard.Range{Start: 0, End: 2048}, shard.Range{Start: 2048, End: shard.SlotCount}
	h.mustOK(setRangesCmd(1, all))
	h.mustOK(moveSourceCmd(1, fsmpb.MoveSource_TRACK, moved))
	a, b := idInRange(shard.Range{Start: 0, End: 1024}), idInRange(shard.Range{Start: 1024, End: 2048})
	slotA, slotB := uint32(shard.SlotOf(a)), uint32(shard.SlotOf(b))
	logEnd := func() uint64 {
		_, end, err := h.f.SlotDigests(1, []shard.Range{{Start: 0, End: 1}})
		if err != nil {
			t.Fatal(err)
		}
		return end
	}
	if end := logEnd(); end != 0 {
		t.Fatalf("log end %d before any write", end)
	}
	h.mustOK(appendCmd(a, "x", "k1", 1))
	afterA := logEnd()
	h.mustOK(appendCmd(b, "x", "k2", 2), appendCmd(idInRange(kept), "x", "", 3))
	cases := []struct {
		name          string
		id, since     uint64
		max           int
		want          []uint32
		wantTruncated bool
	}{
		{"the whole log", 1, 0, 1000, []uint32{slotA, slotB}, false},
		{"since the first write", 1, afterA, 1000, []uint32{slotB}, false},
		{"since the end", 1, logEnd(), 1000, nil, false},
		{"stopped short", 1, 0, 1, []uint32{slotA}, true},
		{"another move's log", 2, 0, 1000, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, truncated, err := h.f.MoveLogSlots(tc.id, tc.since, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) || truncated != tc.wantTruncated {
				t.Fatalf("MoveLogSlots = %v, truncated %v; want %v, %v", got, truncated, tc.want, tc.wantTruncated)
			}
		})
	}
}

func TestValidateMoveDigest(t *testing.T) {
	cases := []struct {
		name   string
		ranges []*fsmpb.SlotRange
		ok     bool
	}{
		{"one piece", RangesToProto([]shard.Range{{Start: 0, End: MaxDigestSlots}}), true},
		{"too many slots", RangesToProto([]shard.Range{{Start: 0, End: MaxDigestSlots + 1}}), false},
		{"empty range", []*fsmpb.SlotRange{{Start: 5, End: 5}}, false},
		{"past the last slot", []*fsmpb.SlotRange{{Start: shard.SlotCount - 1, End: shard.SlotCount + 1}}, false},
		{"no ranges", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateMoveDigest(&fsmpb.MoveRangeDigest{Ranges: tc.ranges})
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidArgument)) {
				t.Fatalf("ValidateMoveDigest: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
