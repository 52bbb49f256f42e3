package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// ErrWrongGroup: an append reached a group that does not own the timeline's
// slot (the proposer's shard map was older or newer than the group's).
// Nothing was written; the caller refreshes its map and retries.
var ErrWrongGroup = errors.New("fsm: timeline belongs to another group")

// keyRanges is the key of the owned ranges in bucketRanges.
var keyRanges = []byte("current")

// ownedRanges is what a data group knows it owns.
type ownedRanges struct {
	mapVersion uint64
	ranges     []shard.Range
	// moving are the ranges this group is moving out (move_source.go).
	moving []*fsmpb.MovingRange
	// importing are the ranges moving in, not yet activated: the group
	// may own them by the map already but serves them only once the
	// source has given them up.
	importing []*fsmpb.MovingRange
}

// importingSlot reports whether a slot is being imported and not yet
// activated.
func (o *ownedRanges) importingSlot(s uint32) bool {
	if o == nil {
		return false
	}
	for _, m := range o.importing {
		if inRanges(s, RangesFromProto(m.GetRanges())) {
			return true
		}
	}
	return false
}

// serves reports whether reads of id may be served here.
func (o *ownedRanges) serves(id string) bool {
	return o.owns(id) && !o.importingSlot(uint32(shard.SlotOf(id)))
}

// fenced reports whether a timeline's slot is fenced by a move.
func (o *ownedRanges) fenced(timeline string) bool {
	if o == nil || len(o.moving)+len(o.importing) == 0 {
		return false
	}
	return o.fencedSlot(uint32(shard.SlotOf(timeline)))
}

// fencedSlot reports whether a slot takes no writes for a move: fenced
// at its source, or imported here and not yet activated.
func (o *ownedRanges) fencedSlot(s uint32) bool {
	if o == nil {
		return false
	}
	if o.importingSlot(s) {
		return true
	}
	for _, m := range o.moving {
		if m.GetFenced() && inRanges(s, RangesFromProto(m.GetRanges())) {
			return true
		}
	}
	return false
}

// explicitly is the set of slots the group was told it owns (empty when
// it was never told, unlike owns, which then owns everything).
func (o *ownedRanges) explicitly() *slotSet {
	if o == nil {
		return &slotSet{}
	}
	return setOf(o.ranges)
}

func (o *ownedRanges) owns(timeline string) bool {
	if o == nil {
		return true // not told yet: the group's first map is the one it was made from
	}
	s := uint32(shard.SlotOf(timeline))
	for _, r := range o.ranges {
		if s >= r.Start && s < r.End {
			return true
		}
	}
	return false
}

func readRanges(root *bolt.Bucket) (*ownedRanges, error) {
	b := sealed{root.Bucket(bucketRanges)}
	v, err := b.Get(keyRanges)
	if err != nil {
		return nil, err
	}
	mv, err := b.Get(keyMoving)
	if err != nil {
		return nil, err
	}
	iv, err := b.Get(keyImporting)
	if err != nil || (v == nil && mv == nil && iv == nil) {
		return nil, err
	}
	// Cached by the records' bytes, length-prefixed so that no two triples
	// share a key.
	raw := binary.BigEndian.AppendUint32(nil, uint32(len(v)))
	raw = append(raw, v...)
	raw = binary.BigEndian.AppendUint32(raw, uint32(len(mv)))
	raw = append(append(raw, mv...), iv...)
	if o, ok := decodedRanges.get(raw); ok {
		return o, nil
	}
	o, err := decodeRanges(v)
	if err != nil {
		return nil, err
	}
	if mv != nil {
		var m fsmpb.MovingRanges
		if err := proto.Unmarshal(mv, &m); err != nil {
			return nil, fmt.Errorf("decode moving ranges: %w", err)
		}
		o.moving = m.GetMoves()
	}
	if iv != nil {
		var m fsmpb.MovingRanges
		if err := proto.Unmarshal(iv, &m); err != nil {
			return nil, fmt.Errorf("decode importing ranges: %w", err)
		}
		o.importing = m.GetMoves()
	}
	decodedRanges.put(raw, o)
	return o, nil
}

// decodedRanges remembers decoded range records by their bytes: every
// append checks its slot against them, and decoding on each one cost more
// than the check. Keyed by content, it can never answer for another state.
var decodedRanges = &rangesCache{m: map[string]*ownedRanges{}}

type rangesCache struct {
	mu sync.Mutex
	m  map[string]*ownedRanges
}

// rangesCacheMax bounds the cache (one record per group and map version).
const rangesCacheMax = 4096

func (c *rangesCache) get(raw []byte) (*ownedRanges, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.m[string(raw)]
	return o, ok
}

func (c *rangesCache) put(raw []byte, o *ownedRanges) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= rangesCacheMax {
		clear(c.m)
	}
	c.m[string(raw)] = o
}

func decodeRanges(v []byte) (*ownedRanges, error) {
	var pb fsmpb.SetRanges
	if err := proto.Unmarshal(v, &pb); err != nil {
		return nil, fmt.Errorf("decode owned ranges: %w", err)
	}
	o := &ownedRanges{mapVersion: pb.GetMapVersion()}
	for _, r := range pb.GetRanges() {
		o.ranges = append(o.ranges, shard.Range{Start: r.GetStart(), End: r.GetEnd()})
	}
	return o, nil
}

func applySetRanges(root *bolt.Bucket, c *fsmpb.SetRanges) error {
	if err := ValidateSetRanges(c); err != nil {
		return reject(err)
	}
	cur, err := readRanges(root)
	if err != nil {
		return err
	}
	if cur != nil && cur.mapVersion >= c.GetMapVersion() {
		return nil // an older or repeated map: keep what we have
	}
	v, err := stored.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode owned ranges: %w", err)
	}
	return sealed{root.Bucket(bucketRanges)}.Put(keyRanges, v)
}

// OwnedRanges returns the slot ranges this group was told it owns and the
// map version that told it; ok is false before it was told.
func (f *FSM) OwnedRanges() (ranges []shard.Range, mapVersion uint64, ok bool, err error) {
	var o *ownedRanges
	err = f.view(func(root *bolt.Bucket) (err error) {
		o, err = readRanges(root)
		return err
	})
	if err != nil || o == nil {
		return nil, 0, false, err
	}
	return slices.Clone(o.ranges), o.mapVersion, true, nil
}

// Serves reports whether the group serves reads of id: it owns id's slot
// and is not still importing it. Reads check it after reading, so that a
// read served by a group that has just given a range up is refused rather
// than answered from a copy the new owner has moved past.
func (f *FSM) Serves(id string) (bool, error) {
	var ok bool
	err := f.view(func(root *bolt.Bucket) error {
		o, err := readRanges(root)
		ok = o.serves(id)
		return err
	})
	return ok, err
}
