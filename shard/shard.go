// Package shard maps timelines to Raft groups: a fixed space of hash slots,
// and a versioned shard map saying which group owns each slot range and
// which nodes hold each group's replicas.
package shard

import (
	"cmp"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
)

// SlotCount is the size of the slot space. Fixed forever: changing it moves
// every timeline.
const SlotCount = 4096

// MetaGroup is the id of the meta Raft group, which holds the node list and
// the shard map. Data groups have ids from 1.
const MetaGroup GroupID = 0

// Slot is a hash slot, 0 .. SlotCount-1.
type Slot uint16

// GroupID names a Raft group.
type GroupID uint64

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SlotOf maps a timeline or collection id to its slot: CRC-32C
// (Castagnoli) of the id's UTF-8 bytes, modulo SlotCount, where a derived
// id (devices/, conversations/, device-events/ + user) hashes as its user.
// This function must never change once data exists; shard_test.go pins it.
func SlotOf(id string) Slot {
	return Slot(crc32.Checksum([]byte(hashedPart(id)), castagnoli) % SlotCount)
}

// Range is the half-open slot range [Start, End).
type Range struct {
	Start, End uint32
}

// Group is one data group in the map.
type Group struct {
	ID     GroupID
	Ranges []Range
	// Replicas are node ids. Replicas[0] is the preferred leader: the group's
	// leader hands leadership to it when it can.
	Replicas []string
	// Creator is the node that bootstraps the group's Raft configuration
	// (itself as the only voter); the others join through the group's leader.
	Creator string
	// Pinned: an operator chose Replicas and their order (a replica move, a
	// leader transfer); Place keeps them while their nodes are active.
	Pinned bool
}

// Map is the shard map. Version grows with every change.
type Map struct {
	Version uint64
	Groups  []Group // by ID
	owner   []GroupID
}

// Errors of Validate.
var (
	ErrSlotUnowned     = errors.New("shard: slot owned by no group")
	ErrSlotOwnedTwice  = errors.New("shard: slot owned by two groups")
	ErrBadGroup        = errors.New("shard: bad group")
	ErrUnknownTimeline = errors.New("shard: no group owns the timeline's slot")
)

// New builds a map from groups and checks it.
func New(version uint64, groups []Group) (*Map, error) {
	m := &Map{Version: version, Groups: slices.Clone(groups)}
	slices.SortFunc(m.Groups, func(a, b Group) int { return cmp.Compare(a.ID, b.ID) })
	if err := m.index(); err != nil {
		return nil, err
	}
	return m, nil
}

// index builds the slot → group table and checks that every slot has
// exactly one owner and every group is well formed.
func (m *Map) index() error {
	owner := make([]GroupID, SlotCount)
	owned := make([]bool, SlotCount)
	seen := map[GroupID]bool{}
	for _, g := range m.Groups {
		if g.ID == MetaGroup || seen[g.ID] {
			return fmt.Errorf("%w: id %d is reserved or repeated", ErrBadGroup, g.ID)
		}
		seen[g.ID] = true
		if len(g.Replicas) == 0 || hasDuplicate(g.Replicas) {
			return fmt.Errorf("%w: group %d needs distinct replicas, has %v", ErrBadGroup, g.ID, g.Replicas)
		}
		for _, r := range g.Ranges {
			if r.Start >= r.End || r.End > SlotCount {
				return fmt.Errorf("%w: group %d has range [%d,%d)", ErrBadGroup, g.ID, r.Start, r.End)
			}
			for s := r.Start; s < r.End; s++ {
				if owned[s] {
					return fmt.Errorf("%w: slot %d (groups %d and %d)", ErrSlotOwnedTwice, s, owner[s], g.ID)
				}
				owned[s], owner[s] = true, g.ID
			}
		}
	}
	for s, ok := range owned {
		if !ok {
			return fmt.Errorf("%w: slot %d", ErrSlotUnowned, s)
		}
	}
	m.owner = owner
	return nil
}

func hasDuplicate(ids []string) bool {
	seen := map[string]bool{}
	for _, id := range ids {
		if id == "" || seen[id] {
			return true
		}
		seen[id] = true
	}
	return false
}

// GroupOf returns the group that owns a slot.
func (m *Map) GroupOf(s Slot) GroupID { return m.owner[s] }

// GroupFor returns the group that owns a timeline.
func (m *Map) GroupFor(timeline string) GroupID { return m.owner[SlotOf(timeline)] }

// Group returns a group by id.
func (m *Map) Group(id GroupID) (Group, bool) {
	i, ok := slices.BinarySearchFunc(m.Groups, id, func(g Group, id GroupID) int { return cmp.Compare(g.ID, id) })
	if !ok {
		return Group{}, false
	}
	return m.Groups[i], true
}

// Has reports whether the map has a data group with this id.
func (m *Map) Has(id GroupID) bool {
	_, ok := m.Group(id)
	return ok
}

// GroupsOn lists the groups with a replica on a node.
func (m *Map) GroupsOn(node string) []GroupID {
	var out []GroupID
	for _, g := range m.Groups {
		if slices.Contains(g.Replicas, node) {
			out = append(out, g.ID)
		}
	}
	return out
}
