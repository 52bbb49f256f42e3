package fsm

import (
	"bytes"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
	"github.com/syncstore/syncstore/storage"
)

// MoveChunk is what ExportMove read: the next MoveImport to propose at the
// target, and the end of the move log when it was read (the copy has
// caught up when the import's cursor reaches it).
type MoveChunk struct {
	Import *fsmpb.MoveImport
	LogEnd uint64
}

// CaughtUp reports whether the chunk's end is the end of the log as read.
func (c *MoveChunk) CaughtUp() bool {
	to := c.Import.GetTo()
	return to.GetBulkDone() && to.GetLogPos() >= c.LogEnd
}

// ExportMove reads, in one read transaction, the keys of a tracked move
// after cursor from: at most maxBytes of them, or one key if it alone is
// larger. The move must be tracked here (MoveSource TRACK), or the copy
// could miss a write.
func (f *FSM) ExportMove(id uint64, ranges []shard.Range, from *fsmpb.MoveCursor, maxBytes int) (*MoveChunk, error) {
	var out *MoveChunk
	err := f.view(func(root *bolt.Bucket) error {
		m, err := readMoving(root)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(m.GetMoves(), func(mr *fsmpb.MovingRange) bool { return mr.GetMoveId() == id })
		if i < 0 || !slices.Equal(RangesFromProto(m.Moves[i].GetRanges()), ranges) {
			return fmt.Errorf("%w: move %d of %v is not tracked here", ErrMoveConflict, id, ranges)
		}
		logEnd, err := sealed{root.Bucket(bucketMoves)}.GetU64(movesKey(movesLogPrefix, id))
		if err != nil {
			return err
		}
		imp := &fsmpb.MoveImport{MoveId: id, Ranges: RangesToProto(ranges), From: from}
		if !from.GetBulkDone() {
			imp.Items, imp.To = exportBulk(root, sortedRanges(ranges), from, maxBytes)
		} else {
			imp.Items, imp.To, err = exportLog(root, id, from, logEnd, maxBytes)
			if err != nil {
				return err
			}
		}
		out = &MoveChunk{Import: imp, LogEnd: logEnd}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: export move %d: %w", id, err)
	}
	return out, nil
}

// exportBulk walks the move buckets in order from the cursor.
func exportBulk(root *bolt.Bucket, ranges []shard.Range, from *fsmpb.MoveCursor, maxBytes int) ([]*fsmpb.MoveItem, *fsmpb.MoveCursor) {
	var items []*fsmpb.MoveItem
	size := 0
	for bi := int(from.GetBucket()); bi < len(moveBuckets); bi++ {
		c := root.Bucket(moveBuckets[bi]).Cursor()
		var after []byte
		if bi == int(from.GetBucket()) {
			after = from.GetAfterKey()
		}
		for _, r := range ranges {
			start, end := slotPrefix(r.Start), slotPrefix(r.End)
			k, v := c.Seek(start)
			if after != nil && bytes.Compare(after, start) >= 0 {
				k, v = c.Seek(after)
				if bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && bytes.Compare(k, end) < 0; k, v = c.Next() {
				if (size+len(k)+len(v) > maxBytes || len(items) == MaxMoveItems) && len(items) > 0 {
					return items, &fsmpb.MoveCursor{Bucket: uint32(bi), AfterKey: items[len(items)-1].GetKey()}
				}
				items = append(items, &fsmpb.MoveItem{Bucket: uint32(bi), Key: bytes.Clone(k), Value: bytes.Clone(v)})
				size += len(k) + len(v)
			}
		}
	}
	return items, &fsmpb.MoveCursor{BulkDone: true}
}

// exportLog replays the move log from the cursor: each logged key once per
// chunk, with the value it has now or as deleted.
func exportLog(root *bolt.Bucket, id uint64, from *fsmpb.MoveCursor, logEnd uint64, maxBytes int) ([]*fsmpb.MoveItem, *fsmpb.MoveCursor, error) {
	var items []*fsmpb.MoveItem
	seen := map[string]bool{}
	size := 0
	pos := from.GetLogPos()
	logb := sealed{root.Bucket(bucketMoveLog)}
	for ; pos < logEnd && len(items) < MaxMoveItems; pos++ {
		e, err := logb.Get(moveLogKey(id, pos))
		if err != nil {
			return nil, nil, err
		}
		if len(e) < 2 || int(e[0]) >= len(moveBuckets) {
			return nil, nil, fmt.Errorf("%w: move %d log entry %d", ErrCorruptState, id, pos)
		}
		bi, k := e[0], e[1:]
		if seen[string(e)] {
			continue
		}
		v := root.Bucket(moveBuckets[bi]).Get(k)
		if size+len(k)+len(v) > maxBytes && len(items) > 0 {
			break // this entry starts the next chunk
		}
		seen[string(e)] = true
		it := &fsmpb.MoveItem{Bucket: uint32(bi), Key: bytes.Clone(k), Value: bytes.Clone(v), Deleted: v == nil}
		items = append(items, it)
		size += len(k) + len(it.Value)
	}
	return items, &fsmpb.MoveCursor{BulkDone: true, LogPos: pos}, nil
}

// ValidateMoveImport checks a MoveImport's content: every key is in the
// move's ranges and every value is sealed for its key (the end-to-end
// check of the copy).
func ValidateMoveImport(c *fsmpb.MoveImport) error {
	if c.GetMoveId() == 0 {
		return fmt.Errorf("%w: move id 0", ErrInvalidArgument)
	}
	if err := validateSlotRanges("move import", c.GetRanges(), false); err != nil {
		return err
	}
	if n := len(c.GetItems()); n > MaxMoveItems {
		return fmt.Errorf("%w: %d move items; the limit is %d", ErrInvalidArgument, n, MaxMoveItems)
	}
	if err := validateMoveCursor(c.GetFrom()); err != nil {
		return err
	}
	if err := validateMoveCursor(c.GetTo()); err != nil {
		return err
	}
	ranges := RangesFromProto(c.GetRanges())
	for _, it := range c.GetItems() {
		k := it.GetKey()
		s, ok := slotOfKey(k)
		switch {
		case it.GetBucket() >= uint32(len(moveBuckets)):
			return fmt.Errorf("%w: move item bucket %d", ErrInvalidArgument, it.GetBucket())
		case !ok || len(k) > maxBoltKey:
			return fmt.Errorf("%w: move item key of %d bytes", ErrInvalidArgument, len(k))
		case !inRanges(s, ranges):
			return fmt.Errorf("%w: move item key of slot %d is outside the move's ranges", ErrInvalidArgument, s)
		case it.GetDeleted() && len(it.GetValue()) > 0:
			return fmt.Errorf("%w: deleted move item with a value", ErrInvalidArgument)
		case !it.GetDeleted():
			if _, err := storage.Unseal(k, it.GetValue()); err != nil {
				return fmt.Errorf("%w: move item %x fails its checksum", ErrInvalidArgument, k)
			}
		}
	}
	return nil
}

// sameCursor compares cursors, an absent one being the start.
func sameCursor(a, b *fsmpb.MoveCursor) bool {
	if a == nil {
		a = &fsmpb.MoveCursor{}
	}
	if b == nil {
		b = &fsmpb.MoveCursor{}
	}
	return proto.Equal(a, b)
}

func validateMoveCursor(c *fsmpb.MoveCursor) error {
	if c.GetBucket() > uint32(len(moveBuckets)) || len(c.GetAfterKey()) > maxBoltKey {
		return fmt.Errorf("%w: move cursor", ErrInvalidArgument)
	}
	return nil
}

func readImportState(root *bolt.Bucket, id uint64) (*fsmpb.MoveImportState, error) {
	st := &fsmpb.MoveImportState{}
	if ok, err := getStored(sealed{root.Bucket(bucketMoves)}, movesKey(movesInPrefix, id), st); !ok {
		return nil, err
	}
	return st, nil
}

func writeImportState(root *bolt.Bucket, st *fsmpb.MoveImportState) error {
	return putStored(sealed{root.Bucket(bucketMoves)}, movesKey(movesInPrefix, st.GetMoveId()), st)
}

// checkNotOwned refuses a move step on a group that owns (or was never
// told its ranges, and so owns) any slot of ranges: a target's import and
// clean-up, a source's clean-up.
func checkNotOwned(root *bolt.Bucket, what string, ranges []shard.Range) error {
	owned, err := readRanges(root)
	if err != nil {
		return err
	}
	if owned == nil {
		return reject(fmt.Errorf("%w: %s: this group was never told its ranges", ErrMoveConflict, what))
	}
	if s, ok := owned.explicitly().firstOf(ranges); ok {
		return reject(fmt.Errorf("%w: %s: this group owns slot %d", ErrMoveConflict, what, s))
	}
	return nil
}

func applyMoveImport(root *bolt.Bucket, c *fsmpb.MoveImport) (*fsmpb.MoveImportState, error) {
	if err := ValidateMoveImport(c); err != nil {
		return nil, reject(err)
	}
	ranges := RangesFromProto(c.GetRanges())
	if err := checkNotOwned(root, fmt.Sprintf("import of move %d", c.GetMoveId()), ranges); err != nil {
		return nil, err
	}
	st, err := readImportState(root, c.GetMoveId())
	if err != nil {
		return nil, err
	}
	if st == nil {
		st = &fsmpb.MoveImportState{MoveId: c.GetMoveId(), Ranges: c.GetRanges(), Cursor: &fsmpb.MoveCursor{}}
		if err := setImporting(root, c.GetMoveId(), c.GetRanges(), true); err != nil {
			return nil, err
		}
	}
	switch {
	case st.GetClosed():
		return nil, reject(fmt.Errorf("%w: move %d was aborted here", ErrMoveConflict, c.GetMoveId()))
	case !slices.Equal(RangesFromProto(st.GetRanges()), ranges):
		return nil, reject(fmt.Errorf("%w: move %d imports other ranges", ErrMoveConflict, c.GetMoveId()))
	case !sameCursor(st.GetCursor(), c.GetFrom()):
		return nil, reject(fmt.Errorf("%w: move %d chunk starts at %v, the import stands at %v", ErrMoveConflict, c.GetMoveId(), c.GetFrom(), st.GetCursor()))
	}
	for _, it := range c.GetItems() {
		b := root.Bucket(moveBuckets[it.GetBucket()])
		if it.GetDeleted() {
			if err := b.Delete(it.GetKey()); err != nil {
				return nil, err
			}
			continue
		}
		if err := b.Put(it.GetKey(), it.GetValue()); err != nil {
			return nil, err
		}
		if err := indexImportedDedupe(root, it); err != nil {
			return nil, err
		}
		st.Records++
		st.Bytes += uint64(len(it.GetKey()) + len(it.GetValue()))
	}
	st.Cursor = c.GetTo()
	return st, writeImportState(root, st)
}

// indexImportedDedupe adds an imported dedupe record to its expiry index,
// the one index not keyed by slot (so not copied).
func indexImportedDedupe(root *bolt.Bucket, it *fsmpb.MoveItem) error {
	k := it.GetKey()
	id, ok := timelineIDOf(k)
	if !ok || len(k) <= 4+len(id) {
		return nil
	}
	kind := k[4+len(id)]
	bucket := moveBuckets[it.GetBucket()]
	var expiry []byte
	var tsOf func([]byte) (int64, error)
	switch {
	case bytes.Equal(bucket, bucketTimelines) && kind == kindDedupe:
		expiry, tsOf = bucketDedupeExpiry, func(v []byte) (int64, error) {
			var rec fsmpb.DedupeRecord
			err := proto.Unmarshal(v, &rec)
			return rec.GetTsMs(), err
		}
	case bytes.Equal(bucket, bucketCollections) && kind == collKindDedupe:
		expiry, tsOf = bucketCollectionExpiry, writeDedupeTs
	default:
		return nil
	}
	v, err := unseal(k, it.GetValue())
	if err != nil {
		return err
	}
	ts, err := tsOf(v)
	if err != nil {
		return fmt.Errorf("decode imported dedupe record: %w", err)
	}
	return sealed{root.Bucket(expiry)}.Put(expiryKey(ts, k), nil)
}

// ImportState returns a target's record of a move (nil if it has none).
func (f *FSM) ImportState(id uint64) (*fsmpb.MoveImportState, error) {
	var st *fsmpb.MoveImportState
	err := f.view(func(root *bolt.Bucket) (err error) {
		st, err = readImportState(root, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: move %d import state: %w", id, err)
	}
	return st, nil
}

// ValidateMoveCleanup checks a MoveCleanup.
func ValidateMoveCleanup(c *fsmpb.MoveCleanup) error {
	if c.GetMoveId() == 0 {
		return fmt.Errorf("%w: move id 0", ErrInvalidArgument)
	}
	if c.GetSide() != fsmpb.MoveCleanup_SOURCE && c.GetSide() != fsmpb.MoveCleanup_TARGET {
		return fmt.Errorf("%w: move cleanup side %d", ErrInvalidArgument, c.GetSide())
	}
	if c.GetMaxKeys() == 0 || c.GetMaxKeys() > MaxMoveCleanupKeys {
		return fmt.Errorf("%w: move cleanup of %d keys; want 1..%d", ErrInvalidArgument, c.GetMaxKeys(), MaxMoveCleanupKeys)
	}
	return validateSlotRanges("move cleanup", c.GetRanges(), false)
}

// applyMoveCleanup deletes up to max_keys keys of the ranges (and at the
// source then the move log) and reports whether none remain.
func applyMoveCleanup(root *bolt.Bucket, c *fsmpb.MoveCleanup) (bool, error) {
	if err := ValidateMoveCleanup(c); err != nil {
		return false, reject(err)
	}
	ranges := RangesFromProto(c.GetRanges())
	what := fmt.Sprintf("cleanup of move %d", c.GetMoveId())
	// A source that still owns the ranges (the move was aborted) keeps its
	// keys and drops only the move log.
	logOnly := false
	if c.GetSide() == fsmpb.MoveCleanup_SOURCE {
		owned, err := readRanges(root)
		if err != nil {
			return false, err
		}
		logOnly = owned != nil && owned.explicitly().containsAll(ranges)
	}
	if !logOnly {
		if err := checkNotOwned(root, what, ranges); err != nil {
			return false, err
		}
	}
	var st *fsmpb.MoveImportState
	if c.GetSide() == fsmpb.MoveCleanup_SOURCE {
		m, err := readMoving(root)
		if err != nil {
			return false, err
		}
		if slices.ContainsFunc(m.GetMoves(), func(mr *fsmpb.MovingRange) bool { return mr.GetMoveId() == c.GetMoveId() }) {
			return false, reject(fmt.Errorf("%w: %s: the move is still tracked here", ErrMoveConflict, what))
		}
	} else {
		var err error
		if st, err = readImportState(root, c.GetMoveId()); err != nil {
			return false, err
		}
		if st == nil {
			st = &fsmpb.MoveImportState{MoveId: c.GetMoveId(), Ranges: c.GetRanges()}
		}
	}
	budget := int(c.GetMaxKeys())
	for _, name := range moveBuckets {
		if logOnly {
			break
		}
		b := sealed{root.Bucket(name)}
		for _, r := range sortedRanges(ranges) {
			keys := keysInRange(b, r, budget)
			if err := deleteKeys(b, keys); err != nil {
				return false, err
			}
			if budget -= len(keys); budget == 0 {
				return false, nil
			}
		}
	}
	if c.GetSide() == fsmpb.MoveCleanup_TARGET {
		st.Closed = true
		if err := setImporting(root, c.GetMoveId(), nil, false); err != nil {
			return false, err
		}
		return true, writeImportState(root, st)
	}
	logb := sealed{root.Bucket(bucketMoveLog)}
	keys := prefixedKeys(logb, u64(c.GetMoveId()), budget, nil)
	if err := deleteKeys(logb, keys); err != nil {
		return false, err
	}
	if len(keys) == budget {
		return false, nil
	}
	return true, sealed{root.Bucket(bucketMoves)}.Delete(movesKey(movesLogPrefix, c.GetMoveId()))
}

// keysInRange collects up to limit keys of slot range r in b.
func keysInRange(b sealed, r shard.Range, limit int) [][]byte {
	var out [][]byte
	end := slotPrefix(r.End)
	c := b.b.Cursor()
	for k, _ := c.Seek(slotPrefix(r.Start)); k != nil && len(out) < limit && bytes.Compare(k, end) < 0; k, _ = c.Next() {
		out = append(out, bytes.Clone(k))
	}
	return out
}
