package fsm

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// The source side of a slot move. While a move is tracked, every key the
// group writes or deletes in the move's ranges is appended to the move log
// (bucketMoveLog: move id (8) + position (8) -> bucket index (1) + key),
// in the same transaction as the write. The copy reads the ranges once
// (the bulk pass, in chunks, each from its own read transaction, so
// successive chunks see successive states) and then replays the log from
// position 0: for each logged key it copies the value the source holds
// when the chunk is read, or a deletion. A key never written after
// tracking began is the same in every chunk; a key written later is in
// the log after its last write, so the last pass that covers it copies
// its final value. Once the source is fenced nothing is logged any more,
// and a pass that reaches the end of the log leaves the target holding
// exactly what the source holds.

// keyMoving is the source's moves in bucketRanges (fsmpb.MovingRanges);
// keyImporting the target's, until activated.
var (
	keyMoving    = []byte("moving")
	keyImporting = []byte("importing")
)

// Keys of bucketMoves.
var (
	movesLogPrefix   = []byte("log/") // + move id: next log position (source)
	movesInPrefix    = []byte("in/")  // + move id: MoveImportState (target)
	movesRecPrefix   = []byte("rec/") // + move id: MoveRecord (meta)
	movesKeyNextID   = []byte("next") // the meta group's next move id
	moveLogKeyLength = 16
)

func movesKey(prefix []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(slices.Clone(prefix), id)
}

func moveLogKey(id, pos uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, id), pos)
}

// ValidateMoveSource checks a MoveSource.
func ValidateMoveSource(c *fsmpb.MoveSource) error {
	if c.GetMoveId() == 0 {
		return fmt.Errorf("%w: move id 0", ErrInvalidArgument)
	}
	if c.GetAction() == fsmpb.MoveSource_ACTION_UNSPECIFIED || fsmpb.MoveSource_Action_name[int32(c.GetAction())] == "" {
		return fmt.Errorf("%w: move source action %d", ErrInvalidArgument, c.GetAction())
	}
	if c.GetDisown() && c.GetAction() != fsmpb.MoveSource_RELEASE {
		return fmt.Errorf("%w: disown is a release's", ErrInvalidArgument)
	}
	if c.GetDisown() && c.GetMapVersion() == 0 {
		return fmt.Errorf("%w: disown needs the switched map version", ErrInvalidArgument)
	}
	return validateSlotRanges("move source", c.GetRanges(), false)
}

// getStored decodes the value at k into m and reports whether there was
// one.
func getStored(b sealed, k []byte, m proto.Message) (bool, error) {
	v, err := b.Get(k)
	if err != nil || v == nil {
		return false, err
	}
	if err := proto.Unmarshal(v, m); err != nil {
		return false, fmt.Errorf("decode %s at %q: %w", m.ProtoReflect().Descriptor().Name(), k, err)
	}
	return true, nil
}

// putStored encodes m at k.
func putStored(b sealed, k []byte, m proto.Message) error {
	v, err := stored.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return b.Put(k, v)
}

func readMoving(root *bolt.Bucket) (*fsmpb.MovingRanges, error) { return readMovesAt(root, keyMoving) }

func writeMoving(root *bolt.Bucket, m *fsmpb.MovingRanges) error {
	return writeMovesAt(root, keyMoving, m)
}

func readMovesAt(root *bolt.Bucket, key []byte) (*fsmpb.MovingRanges, error) {
	m := &fsmpb.MovingRanges{}
	if _, err := getStored(sealed{root.Bucket(bucketRanges)}, key, m); err != nil {
		return nil, err
	}
	return m, nil
}

func writeMovesAt(root *bolt.Bucket, key []byte, m *fsmpb.MovingRanges) error {
	b := sealed{root.Bucket(bucketRanges)}
	if len(m.GetMoves()) == 0 {
		return b.Delete(key)
	}
	return putStored(b, key, m)
}

// setImporting adds (or, with add false, removes) a move to the target's
// importing ranges.
func setImporting(root *bolt.Bucket, id uint64, ranges []*fsmpb.SlotRange, add bool) error {
	m, err := readMovesAt(root, keyImporting)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(m.GetMoves(), func(mr *fsmpb.MovingRange) bool { return mr.GetMoveId() == id })
	switch {
	case add && i < 0:
		m.Moves = append(m.Moves, &fsmpb.MovingRange{MoveId: id, Ranges: ranges})
	case !add && i >= 0:
		m.Moves = slices.Delete(m.Moves, i, i+1)
	default:
		return nil
	}
	return writeMovesAt(root, keyImporting, m)
}

// applyActivate ends a target's import: the ranges serve from now on.
func applyActivate(root *bolt.Bucket, c *fsmpb.MoveSource) error {
	st, err := readImportState(root, c.GetMoveId())
	if err != nil {
		return err
	}
	if st == nil || st.GetClosed() {
		return reject(fmt.Errorf("%w: move %d has no open import here", ErrMoveConflict, c.GetMoveId()))
	}
	return setImporting(root, c.GetMoveId(), nil, false)
}

func applyMoveSource(root *bolt.Bucket, c *fsmpb.MoveSource) error {
	if err := ValidateMoveSource(c); err != nil {
		return reject(err)
	}
	if c.GetAction() == fsmpb.MoveSource_ACTIVATE {
		return applyActivate(root, c)
	}
	owned, err := readRanges(root)
	if err != nil {
		return err
	}
	m, err := readMoving(root)
	if err != nil {
		return err
	}
	ranges := RangesFromProto(c.GetRanges())
	i := slices.IndexFunc(m.GetMoves(), func(mr *fsmpb.MovingRange) bool { return mr.GetMoveId() == c.GetMoveId() })
	if i >= 0 && !slices.Equal(RangesFromProto(m.Moves[i].GetRanges()), ranges) {
		return reject(fmt.Errorf("%w: move %d is tracked with other ranges", ErrMoveConflict, c.GetMoveId()))
	}
	switch c.GetAction() {
	case fsmpb.MoveSource_TRACK:
		if i >= 0 {
			return nil // a retry
		}
		if owned == nil || !owned.explicitly().containsAll(ranges) {
			return reject(fmt.Errorf("%w: move %d: this group does not own all of %v", ErrMoveConflict, c.GetMoveId(), ranges))
		}
		busy := &slotSet{}
		for _, o := range m.GetMoves() {
			busy.add(RangesFromProto(o.GetRanges()))
		}
		if s, ok := busy.firstOf(ranges); ok {
			return reject(fmt.Errorf("%w: move %d: slot %d is moving already", ErrMoveConflict, c.GetMoveId(), s))
		}
		m.Moves = append(m.Moves, &fsmpb.MovingRange{MoveId: c.GetMoveId(), Ranges: c.GetRanges()})
	case fsmpb.MoveSource_FENCE:
		if i < 0 {
			return reject(fmt.Errorf("%w: move %d is not tracked here", ErrMoveConflict, c.GetMoveId()))
		}
		m.Moves[i].Fenced = true
	case fsmpb.MoveSource_RELEASE:
		if c.GetDisown() {
			if err := disown(root, owned, ranges, c.GetMapVersion()); err != nil {
				return err
			}
		}
		if i < 0 {
			return nil // released already
		}
		m.Moves = slices.Delete(m.Moves, i, i+1)
	}
	if err := writeMoving(root, m); err != nil {
		return err
	}
	return reloadTracking(root)
}

// disown takes ranges out of the group's own and raises its map version to
// the switched map's, so that a SetRanges computed from an older map (a
// lagging reconciler's) never gives them back.
func disown(root *bolt.Bucket, owned *ownedRanges, ranges []shard.Range, mapVersion uint64) error {
	if owned == nil {
		return reject(fmt.Errorf("%w: disown: this group was never told its ranges", ErrMoveConflict))
	}
	set := owned.explicitly()
	set.remove(ranges)
	c := &fsmpb.SetRanges{MapVersion: max(owned.mapVersion, mapVersion), Ranges: RangesToProto(set.ranges())}
	v, err := stored.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode owned ranges: %w", err)
	}
	return sealed{root.Bucket(bucketRanges)}.Put(keyRanges, v)
}

// Tracking: sealed.Put and sealed.Delete call noteWrite with their bucket;
// the buckets of a transaction applying a group with tracked moves are
// registered here for the length of its batch. Registration is by bucket
// pointer because bbolt returns the same *Bucket for a name throughout a
// writable transaction, and several groups share one transaction.
var (
	trackers       sync.Map // root *bolt.Bucket -> *moveTracker, for every batch
	trackedBuckets sync.Map // *bolt.Bucket -> trackedBucket
	trackedCount   atomic.Int64
)

type trackedBucket struct {
	t   *moveTracker
	idx uint8
}

// moveTracker logs the writes of one group's batch to its tracked ranges.
type moveTracker struct {
	root    *bolt.Bucket
	moves   []trackedMove
	buckets []*bolt.Bucket // registered in trackedBuckets
}

type trackedMove struct {
	id     uint64
	ranges []shard.Range
}

// beginTracking starts a batch on root; endTracking must follow it.
func beginTracking(root *bolt.Bucket) (*moveTracker, error) {
	t := &moveTracker{root: root}
	trackers.Store(root, t)
	return t, t.reload()
}

func (t *moveTracker) end() {
	t.unregister()
	trackers.Delete(t.root)
}

func (t *moveTracker) unregister() {
	for _, b := range t.buckets {
		trackedBuckets.Delete(b)
		trackedCount.Add(-1)
	}
	t.buckets = nil
}

// reload reads the moves being tracked and registers the buckets if there
// are any. Fenced moves stay tracked: a fenced range refuses writes from
// requests, and whatever else still writes there is copied too.
func (t *moveTracker) reload() error {
	m, err := readMoving(t.root)
	if err != nil {
		return err
	}
	t.unregister()
	t.moves = nil
	for _, mv := range m.GetMoves() {
		t.moves = append(t.moves, trackedMove{id: mv.GetMoveId(), ranges: RangesFromProto(mv.GetRanges())})
	}
	if len(t.moves) == 0 {
		return nil
	}
	for i, name := range moveBuckets {
		b := t.root.Bucket(name)
		trackedBuckets.Store(b, trackedBucket{t: t, idx: uint8(i)})
		trackedCount.Add(1)
		t.buckets = append(t.buckets, b)
	}
	return nil
}

// reloadTracking refreshes the tracker of root's batch after its moves
// changed (none outside a batch: fsm tests that dispatch directly).
func reloadTracking(root *bolt.Bucket) error {
	if v, ok := trackers.Load(root); ok {
		return v.(*moveTracker).reload()
	}
	return nil
}

// noteWrite logs a write to k in b if b is a tracked bucket and k is in a
// tracked range.
func noteWrite(b *bolt.Bucket, k []byte) error {
	if trackedCount.Load() == 0 {
		return nil
	}
	v, ok := trackedBuckets.Load(b)
	if !ok {
		return nil
	}
	tb := v.(trackedBucket)
	return tb.t.note(tb.idx, k)
}

func (t *moveTracker) note(idx uint8, k []byte) error {
	s, ok := slotOfKey(k)
	if !ok {
		return nil
	}
	for _, mv := range t.moves {
		if !inRanges(s, mv.ranges) {
			continue
		}
		moves := sealed{t.root.Bucket(bucketMoves)}
		ck := movesKey(movesLogPrefix, mv.id)
		pos, err := moves.GetU64(ck)
		if err != nil {
			return err
		}
		entry := append([]byte{idx}, k...)
		if err := (sealed{t.root.Bucket(bucketMoveLog)}).Put(moveLogKey(mv.id, pos), entry); err != nil {
			return err
		}
		return moves.Put(ck, u64(pos+1))
	}
	return nil
}
