package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// MaxDigestSlots bounds the slots one SlotDigests call reads, so that its
// read transaction stays short (a long one holds back the storage
// engine's remap, and every group's writes behind it).
const MaxDigestSlots = 256

// MaxMoveLogSlotsEntries bounds the log entries one MoveLogSlots reads.
const MaxMoveLogSlotsEntries = 1 << 16

// RangeDigest hashes every key of the move buckets in ranges: a source and
// its target hold the same ranges exactly when their digests agree.
func (f *FSM) RangeDigest(ranges []shard.Range) (string, uint64, error) {
	h := sha256.New()
	var keys uint64
	err := f.view(func(root *bolt.Bucket) error {
		walkMoveKeys(root, ranges, func(bucket, k, v []byte) {
			h.Write(bucket)
			writeLenPrefixed(h, k)
			writeLenPrefixed(h, v)
			keys++
		})
		return nil
	})
	if err != nil {
		return "", 0, fmt.Errorf("fsm: range digest: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), keys, nil
}

// ValidateMoveDigest checks a MoveRangeDigest: valid ranges of at most
// MaxDigestSlots slots.
func ValidateMoveDigest(c *fsmpb.MoveRangeDigest) error {
	if err := validateSlotRanges("move digest", c.GetRanges(), false); err != nil {
		return err
	}
	if n := shard.Slots(RangesFromProto(c.GetRanges())); n > MaxDigestSlots {
		return fmt.Errorf("%w: a digest of %d slots (at most %d)", ErrInvalidArgument, n, MaxDigestSlots)
	}
	return nil
}

// SlotDigests hashes each slot's keys of the move buckets in ranges (a
// slot without keys is left out), in slot order, and reads in the same
// transaction the end of move id's log if the move is tracked here (else
// 0). The caller bounds ranges (ValidateMoveDigest).
func (f *FSM) SlotDigests(id uint64, ranges []shard.Range) ([]*fsmpb.SlotDigest, uint64, error) {
	type slotHash struct {
		h    hash.Hash
		keys uint64
	}
	hashes := map[uint32]*slotHash{}
	var logEnd uint64
	err := f.view(func(root *bolt.Bucket) error {
		if id != 0 {
			end, err := sealed{root.Bucket(bucketMoves)}.GetU64(movesKey(movesLogPrefix, id))
			if err != nil {
				return err
			}
			logEnd = end
		}
		walkMoveKeys(root, ranges, func(bucket, k, v []byte) {
			slot, _ := slotOfKey(k)
			sh := hashes[slot]
			if sh == nil {
				sh = &slotHash{h: sha256.New()}
				hashes[slot] = sh
			}
			sh.h.Write(bucket)
			writeLenPrefixed(sh.h, k)
			writeLenPrefixed(sh.h, v)
			sh.keys++
		})
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("fsm: slot digests: %w", err)
	}
	out := make([]*fsmpb.SlotDigest, 0, len(hashes))
	for slot, sh := range hashes {
		out = append(out, &fsmpb.SlotDigest{Slot: slot, Digest: sh.h.Sum(nil), Keys: sh.keys})
	}
	slices.SortFunc(out, func(a, b *fsmpb.SlotDigest) int { return int(a.Slot) - int(b.Slot) })
	return out, logEnd, nil
}

// MoveLogSlots returns, in order, the slots that move id's log names from
// position since on, reading at most maxEntries entries; truncated says
// the log went on.
func (f *FSM) MoveLogSlots(id, since uint64, maxEntries int) (slots []uint32, truncated bool, err error) {
	seen := map[uint32]bool{}
	err = f.view(func(root *bolt.Bucket) error {
		prefix := moveLogKey(id, 0)[:8]
		c := root.Bucket(bucketMoveLog).Cursor()
		read := 0
		for k, v := c.Seek(moveLogKey(id, since)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if read == maxEntries {
				truncated = true
				return nil
			}
			read++
			e, err := unseal(k, v)
			if err != nil {
				return err
			}
			if len(e) < 3 {
				return fmt.Errorf("%w: move %d log entry %x", ErrCorruptState, id, k)
			}
			slot, _ := slotOfKey(e[1:]) // e is a bucket index and a key
			seen[slot] = true
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("fsm: move %d log slots: %w", id, err)
	}
	for s := range seen {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	return slots, truncated, nil
}

// walkMoveKeys calls fn with every key of the move buckets in ranges, bucket
// by bucket, in key order within each.
func walkMoveKeys(root *bolt.Bucket, ranges []shard.Range, fn func(bucket, k, v []byte)) {
	for _, name := range moveBuckets {
		c := root.Bucket(name).Cursor()
		for _, r := range sortedRanges(ranges) {
			end := slotPrefix(r.End)
			for k, v := c.Seek(slotPrefix(r.Start)); k != nil && bytes.Compare(k, end) < 0; k, v = c.Next() {
				fn(name, k, v)
			}
		}
	}
}
