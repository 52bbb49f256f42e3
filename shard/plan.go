package shard

import (
	"fmt"
	"slices"
)

// Move is a planned move of slot ranges, all owned by From, to To.
type Move struct {
	Ranges   []Range
	From, To GroupID
}

// Slots counts the slots of ranges.
func Slots(ranges []Range) int {
	n := 0
	for _, r := range ranges {
		n += int(r.End - r.Start)
	}
	return n
}

// WithNewGroups returns the next version of m with count new groups (ids
// after the largest) that own no slots yet, placed on nodes by Place; each
// new group's creator is its first replica.
func WithNewGroups(m *Map, count int, nodes []string) (*Map, []GroupID, error) {
	if count < 1 || len(m.Groups)+count > SlotCount {
		return nil, nil, fmt.Errorf("shard: add %d groups to %d: want 1..%d in all", count, len(m.Groups), SlotCount)
	}
	var last GroupID
	for _, g := range m.Groups {
		last = max(last, g.ID)
	}
	groups := slices.Clone(m.Groups)
	var ids []GroupID
	for i := range count {
		id := last + GroupID(i) + 1
		ids = append(ids, id)
		groups = append(groups, Group{ID: id})
	}
	placed, err := Place(&Map{Version: m.Version, Groups: groups}, nodes)
	if err != nil {
		return nil, nil, err
	}
	for i := range placed.Groups {
		if slices.Contains(ids, placed.Groups[i].ID) {
			placed.Groups[i].Creator = placed.Groups[i].Replicas[0]
		}
	}
	return placed, ids, nil
}

// SplitPlan moves the upper half of a group's slots (by count) to to.
func SplitPlan(m *Map, from, to GroupID) ([]Move, error) {
	g, ok := m.Group(from)
	if !ok {
		return nil, fmt.Errorf("shard: no group %d", from)
	}
	n := Slots(g.Ranges)
	if n < 2 {
		return nil, fmt.Errorf("shard: group %d owns %d slots: nothing to split", from, n)
	}
	return takeTop(g.Ranges, n/2, from, to), nil
}

// takeTop plans moves of the highest count slots of ranges: one move per
// range they touch.
func takeTop(ranges []Range, count int, from, to GroupID) []Move {
	rs := slices.Clone(ranges)
	slices.SortFunc(rs, func(a, b Range) int { return int(b.Start) - int(a.Start) })
	var moves []Move
	for _, r := range rs {
		if count == 0 {
			break
		}
		take := min(count, int(r.End-r.Start))
		moves = append(moves, Move{Ranges: []Range{{Start: r.End - uint32(take), End: r.End}}, From: from, To: to})
		count -= take
	}
	return moves
}

// EvenPlan plans the moves that give every group an even share of the
// slots (SlotCount/len(groups), the first SlotCount%len(groups) groups by
// id one more): each group above its share gives its highest slots to
// groups below theirs, in id order. An even map plans nothing.
func EvenPlan(m *Map) []Move {
	n := len(m.Groups)
	if n == 0 {
		return nil
	}
	want := map[GroupID]int{}
	have := map[GroupID]int{}
	for i, g := range m.Groups {
		want[g.ID] = SlotCount / n
		if i < SlotCount%n {
			want[g.ID]++
		}
		have[g.ID] = Slots(g.Ranges)
	}
	var moves []Move
	for _, donor := range m.Groups {
		ranges := slices.Clone(donor.Ranges)
		for _, taker := range m.Groups {
			extra := have[donor.ID] - want[donor.ID]
			need := want[taker.ID] - have[taker.ID]
			if extra <= 0 {
				break
			}
			if need <= 0 {
				continue
			}
			k := min(extra, need)
			planned := takeTop(ranges, k, donor.ID, taker.ID)
			moves = append(moves, planned...)
			for _, mv := range planned {
				ranges = without(ranges, mv.Ranges[0])
			}
			have[donor.ID] -= k
			have[taker.ID] += k
		}
	}
	return moves
}

// without removes r (which lies inside one of ranges) from ranges.
func without(ranges []Range, r Range) []Range {
	var out []Range
	for _, x := range ranges {
		if r.Start >= x.End || r.End <= x.Start {
			out = append(out, x)
			continue
		}
		if x.Start < r.Start {
			out = append(out, Range{Start: x.Start, End: r.Start})
		}
		if r.End < x.End {
			out = append(out, Range{Start: r.End, End: x.End})
		}
	}
	return out
}
