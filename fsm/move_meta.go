package fsm

import (
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// The meta group's record of slot moves: each move is a MoveRecord whose
// phase only advances along planned -> fenced -> copied -> switched ->
// cleaned, or to aborted before the switch. Every step is a command
// checked against the recorded phase, so whichever meta leader drives a
// move, a step is taken once, and the switch (the shard map change) is
// taken in the same command that checks the copy is complete.

// MaxMoveNoteBytes bounds a move record's note and reason.
const MaxMoveNoteBytes = 1024

// MaxActiveMoves bounds the moves not yet cleaned or aborted.
const MaxActiveMoves = 64

// MoveFinal reports whether a phase is final.
func MoveFinal(p fsmpb.MovePhase) bool {
	return p == fsmpb.MovePhase_CLEANED || p == fsmpb.MovePhase_ABORTED
}

// ValidateMovePlan checks a MovePlan's content.
func ValidateMovePlan(c *fsmpb.MovePlan) error {
	if c.GetTarget() == 0 {
		return fmt.Errorf("%w: move to group 0 (the meta group)", ErrInvalidArgument)
	}
	if len(c.GetReason()) > MaxMoveNoteBytes {
		return fmt.Errorf("%w: move reason of %d bytes; the limit is %d", ErrInvalidArgument, len(c.GetReason()), MaxMoveNoteBytes)
	}
	return validateSlotRanges("move plan", c.GetRanges(), false)
}

func readMoveRecord(root *bolt.Bucket, id uint64) (*fsmpb.MoveRecord, error) {
	rec := &fsmpb.MoveRecord{}
	if ok, err := getStored(sealed{root.Bucket(bucketMoves)}, movesKey(movesRecPrefix, id), rec); !ok {
		return nil, err
	}
	return rec, nil
}

func writeMoveRecord(root *bolt.Bucket, rec *fsmpb.MoveRecord) error {
	return putStored(sealed{root.Bucket(bucketMoves)}, movesKey(movesRecPrefix, rec.GetId()), rec)
}

func readMoveRecords(root *bolt.Bucket) ([]*fsmpb.MoveRecord, error) {
	var out []*fsmpb.MoveRecord
	b := sealed{root.Bucket(bucketMoves)}
	for _, k := range prefixedKeys(b, movesRecPrefix, 0, nil) {
		rec := &fsmpb.MoveRecord{}
		if _, err := getStored(b, k, rec); err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// Moves lists the meta group's move records by id.
func (f *FSM) Moves() ([]*fsmpb.MoveRecord, error) {
	var out []*fsmpb.MoveRecord
	err := f.view(func(root *bolt.Bucket) (err error) {
		out, err = readMoveRecords(root)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: moves: %w", err)
	}
	return out, nil
}

func readStoredShardMap(root *bolt.Bucket) (*shard.Map, error) {
	v, err := sealed{root.Bucket(bucketShardMap)}.Get(keyShardMap)
	if err != nil || v == nil {
		return nil, err
	}
	var pb fsmpb.ShardMap
	if err := proto.Unmarshal(v, &pb); err != nil {
		return nil, fmt.Errorf("decode shard map: %w", err)
	}
	return ShardMapFromProto(&pb)
}

// applyMovePlan records a move and returns its id.
func applyMovePlan(root *bolt.Bucket, nowMs int64, c *fsmpb.MovePlan) (uint64, error) {
	if err := ValidateMovePlan(c); err != nil {
		return 0, reject(err)
	}
	m, err := readStoredShardMap(root)
	if err != nil {
		return 0, err
	}
	recs, err := readMoveRecords(root)
	if err != nil {
		return 0, err
	}
	source, err := CheckMovePlan(m, recs, c)
	if err != nil {
		return 0, reject(err)
	}
	target := shard.GroupID(c.GetTarget())
	ranges := sortedRanges(RangesFromProto(c.GetRanges()))
	b := sealed{root.Bucket(bucketMoves)}
	id, err := b.GetU64(movesKeyNextID)
	if err != nil {
		return 0, err
	}
	id = max(id, 1)
	if err := b.Put(movesKeyNextID, u64(id+1)); err != nil {
		return 0, err
	}
	return id, writeMoveRecord(root, &fsmpb.MoveRecord{
		Id: id, Ranges: RangesToProto(ranges), Source: uint64(source), Target: uint64(target),
		Phase: fsmpb.MovePhase_PLANNED, CreatedMs: nowMs, UpdatedMs: nowMs, Reason: c.GetReason(),
	})
}

// CheckMovePlan checks a plan against the shard map and the moves under
// way (the node checks before it proposes, the state machine again at
// apply) and returns the group the slots move from.
func CheckMovePlan(m *shard.Map, recs []*fsmpb.MoveRecord, c *fsmpb.MovePlan) (shard.GroupID, error) {
	if err := ValidateMovePlan(c); err != nil {
		return 0, err
	}
	if m == nil {
		return 0, fmt.Errorf("%w: no shard map yet", ErrMoveConflict)
	}
	target := shard.GroupID(c.GetTarget())
	if !m.Has(target) {
		return 0, fmt.Errorf("%w: target group %d is not in the shard map", ErrInvalidArgument, target)
	}
	ranges := sortedRanges(RangesFromProto(c.GetRanges()))
	source := m.GroupOf(shard.Slot(ranges[0].Start))
	for _, r := range ranges {
		for s := r.Start; s < r.End; s++ {
			if g := m.GroupOf(shard.Slot(s)); g != source {
				return 0, fmt.Errorf("%w: slots %d and %d belong to groups %d and %d: a move takes slots of one group", ErrInvalidArgument, ranges[0].Start, s, source, g)
			}
		}
	}
	if source == target {
		return 0, fmt.Errorf("%w: group %d owns these slots already", ErrInvalidArgument, target)
	}
	active := 0
	busy := &slotSet{}
	for _, r := range recs {
		if !MoveFinal(r.GetPhase()) {
			active++
			busy.add(RangesFromProto(r.GetRanges()))
		}
	}
	if active >= MaxActiveMoves {
		return 0, fmt.Errorf("%w: %d moves are under way; the limit is %d", ErrMoveConflict, active, MaxActiveMoves)
	}
	if s, ok := busy.firstOf(ranges); ok {
		return 0, fmt.Errorf("%w: slot %d is in a move under way", ErrMoveConflict, s)
	}
	return source, nil
}

// moveSteps are the phase changes a MoveUpdate may make.
var moveSteps = map[fsmpb.MovePhase][]fsmpb.MovePhase{
	fsmpb.MovePhase_PLANNED:  {fsmpb.MovePhase_FENCED, fsmpb.MovePhase_ABORTED},
	fsmpb.MovePhase_FENCED:   {fsmpb.MovePhase_COPIED, fsmpb.MovePhase_ABORTED},
	fsmpb.MovePhase_COPIED:   {fsmpb.MovePhase_ABORTED},
	fsmpb.MovePhase_SWITCHED: {fsmpb.MovePhase_CLEANED},
}

// ValidateMoveUpdate checks a MoveUpdate's content.
func ValidateMoveUpdate(c *fsmpb.MoveUpdate) error {
	if c.GetId() == 0 {
		return fmt.Errorf("%w: move id 0", ErrInvalidArgument)
	}
	if len(c.GetNote()) > MaxMoveNoteBytes {
		return fmt.Errorf("%w: move note of %d bytes; the limit is %d", ErrInvalidArgument, len(c.GetNote()), MaxMoveNoteBytes)
	}
	return nil
}

func applyMoveUpdate(root *bolt.Bucket, nowMs int64, c *fsmpb.MoveUpdate) error {
	if err := ValidateMoveUpdate(c); err != nil {
		return reject(err)
	}
	rec, err := readMoveRecord(root, c.GetId())
	if err != nil {
		return err
	}
	if rec == nil {
		return reject(fmt.Errorf("%w: no move %d", ErrUnknownMove, c.GetId()))
	}
	switch {
	case c.GetAbort():
		if MoveFinal(rec.GetPhase()) || rec.GetPhase() == fsmpb.MovePhase_SWITCHED {
			return reject(fmt.Errorf("%w: move %d is %s; only a move before its switch can be aborted", ErrMoveConflict, rec.GetId(), PhaseName(rec.GetPhase())))
		}
		rec.AbortRequested = true
	case rec.GetPhase() != c.GetFrom():
		return reject(fmt.Errorf("%w: move %d is %s, not %s", ErrMoveConflict, rec.GetId(), PhaseName(rec.GetPhase()), PhaseName(c.GetFrom())))
	case c.GetTo() == c.GetFrom(): // progress only
	case !slices.Contains(moveSteps[rec.GetPhase()], c.GetTo()):
		return reject(fmt.Errorf("%w: move %d cannot go from %s to %s", ErrMoveConflict, rec.GetId(), PhaseName(rec.GetPhase()), PhaseName(c.GetTo())))
	case c.GetTo() == fsmpb.MovePhase_ABORTED && !rec.GetAbortRequested():
		return reject(fmt.Errorf("%w: move %d: no abort was asked for", ErrMoveConflict, rec.GetId()))
	case c.GetTo() == fsmpb.MovePhase_FENCED && rec.GetAbortRequested():
		return reject(fmt.Errorf("%w: move %d is being aborted", ErrMoveConflict, rec.GetId()))
	default:
		rec.Phase = c.GetTo()
		if c.GetTo() == fsmpb.MovePhase_FENCED {
			rec.FencedMs = nowMs
		}
	}
	if !c.GetAbort() {
		rec.Records = max(rec.GetRecords(), c.GetRecords())
		rec.Bytes = max(rec.GetBytes(), c.GetBytes())
		rec.Note = c.GetNote()
		if c.GetResumed() {
			rec.Resumes++
		}
	}
	rec.UpdatedMs = nowMs
	return writeMoveRecord(root, rec)
}

// applyMoveSwitch gives a copied move's ranges to its target.
func applyMoveSwitch(root *bolt.Bucket, nowMs int64, c *fsmpb.MoveSwitch) error {
	rec, err := readMoveRecord(root, c.GetId())
	if err != nil {
		return err
	}
	switch {
	case rec == nil:
		return reject(fmt.Errorf("%w: no move %d", ErrUnknownMove, c.GetId()))
	case rec.GetPhase() == fsmpb.MovePhase_SWITCHED || rec.GetPhase() == fsmpb.MovePhase_CLEANED:
		return nil // a retry
	case rec.GetPhase() != fsmpb.MovePhase_COPIED || rec.GetAbortRequested():
		return reject(fmt.Errorf("%w: move %d is %s (abort asked: %t); only a copied move switches", ErrMoveConflict, rec.GetId(), PhaseName(rec.GetPhase()), rec.GetAbortRequested()))
	}
	m, err := readStoredShardMap(root)
	if err != nil {
		return err
	}
	next, err := switchedMap(m, rec)
	if err != nil {
		return reject(err)
	}
	v, err := stored.Marshal(ShardMapToProto(next))
	if err != nil {
		return fmt.Errorf("encode shard map: %w", err)
	}
	if err := (sealed{root.Bucket(bucketShardMap)}).Put(keyShardMap, v); err != nil {
		return err
	}
	rec.Phase, rec.SwitchedMs, rec.SwitchedMapVersion, rec.UpdatedMs = fsmpb.MovePhase_SWITCHED, nowMs, next.Version, nowMs
	return writeMoveRecord(root, rec)
}

// switchedMap is m with the move's ranges taken from its source (which
// must still own them all) and given to its target.
func switchedMap(m *shard.Map, rec *fsmpb.MoveRecord) (*shard.Map, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: no shard map", ErrMoveConflict)
	}
	ranges := RangesFromProto(rec.GetRanges())
	source, target := shard.GroupID(rec.GetSource()), shard.GroupID(rec.GetTarget())
	groups := slices.Clone(m.Groups)
	si := slices.IndexFunc(groups, func(g shard.Group) bool { return g.ID == source })
	ti := slices.IndexFunc(groups, func(g shard.Group) bool { return g.ID == target })
	if si < 0 || ti < 0 {
		return nil, fmt.Errorf("%w: move %d: group %d or %d left the shard map", ErrMoveConflict, rec.GetId(), source, target)
	}
	src := setOf(groups[si].Ranges)
	if !src.containsAll(ranges) {
		return nil, fmt.Errorf("%w: move %d: group %d no longer owns all of %v", ErrMoveConflict, rec.GetId(), source, ranges)
	}
	src.remove(ranges)
	dst := setOf(groups[ti].Ranges)
	dst.add(ranges)
	groups[si].Ranges, groups[ti].Ranges = src.ranges(), dst.ranges()
	return shard.New(m.Version+1, groups)
}

// phaseNames name the move phases as syncctl prints them.
var phaseNames = map[fsmpb.MovePhase]string{
	fsmpb.MovePhase_PLANNED: "planned", fsmpb.MovePhase_FENCED: "fenced", fsmpb.MovePhase_COPIED: "copied",
	fsmpb.MovePhase_SWITCHED: "switched", fsmpb.MovePhase_CLEANED: "cleaned", fsmpb.MovePhase_ABORTED: "aborted",
}

// PhaseName names a move phase as syncctl prints it.
func PhaseName(p fsmpb.MovePhase) string { return phaseNames[p] }
