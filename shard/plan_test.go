package shard

import (
	"slices"
	"testing"
)

func mapOf(t *testing.T, groups ...Group) *Map {
	t.Helper()
	for i := range groups {
		if groups[i].Replicas == nil {
			groups[i].Replicas = []string{"n1"}
		}
	}
	m, err := New(1, groups)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// apply plays moves on m and returns each group's slot count, failing if
// a move takes a slot its source does not own.
func applyMoves(t *testing.T, m *Map, moves []Move) map[GroupID]int {
	t.Helper()
	owner := slices.Clone(m.owner)
	for _, mv := range moves {
		for _, r := range mv.Ranges {
			for s := r.Start; s < r.End; s++ {
				if owner[s] != mv.From {
					t.Fatalf("move %+v takes slot %d owned by %d", mv, s, owner[s])
				}
				owner[s] = mv.To
			}
		}
	}
	count := map[GroupID]int{}
	for _, g := range owner {
		count[g]++
	}
	return count
}

func TestEvenPlan(t *testing.T) {
	for _, tc := range []struct {
		name   string
		groups []Group
		moves  int
		want   map[GroupID]int
	}{
		{"even already", []Group{{ID: 1, Ranges: []Range{{0, 2048}}}, {ID: 2, Ranges: []Range{{2048, 4096}}}}, 0, map[GroupID]int{1: 2048, 2: 2048}},
		{"one new group", []Group{{ID: 1, Ranges: []Range{{0, 2048}}}, {ID: 2, Ranges: []Range{{2048, 4096}}}, {ID: 3}}, 2, map[GroupID]int{1: 1366, 2: 1365, 3: 1365}},
		{"two new groups", []Group{{ID: 1, Ranges: []Range{{0, 4096}}}, {ID: 2}, {ID: 3}}, 2, map[GroupID]int{1: 1366, 2: 1365, 3: 1365}},
		{"fragmented donor", []Group{{ID: 1, Ranges: []Range{{0, 10}, {20, 4096}}}, {ID: 2, Ranges: []Range{{10, 20}}}}, 1, map[GroupID]int{1: 2048, 2: 2048}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mapOf(t, tc.groups...)
			moves := EvenPlan(m)
			if len(moves) != tc.moves {
				t.Errorf("%d moves, want %d: %+v", len(moves), tc.moves, moves)
			}
			if got := applyMoves(t, m, moves); !mapsEqual(got, tc.want) {
				t.Fatalf("after the moves: %v, want %v", got, tc.want)
			}
		})
	}
}

func mapsEqual(a, b map[GroupID]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestSplitPlanMovesTheUpperHalf(t *testing.T) {
	m := mapOf(t, Group{ID: 1, Ranges: []Range{{0, 100}, {200, 300}}}, Group{ID: 2, Ranges: []Range{{100, 200}, {300, 4096}}}, Group{ID: 3})
	moves, err := SplitPlan(m, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := applyMoves(t, m, moves); got[1] != 100 || got[3] != 100 {
		t.Fatalf("after the split: %v", got)
	}
	if !slices.Equal(moves[0].Ranges, []Range{{200, 300}}) {
		t.Fatalf("split moves %+v, want the upper range", moves)
	}
	if _, err := SplitPlan(mapOf(t, Group{ID: 1, Ranges: []Range{{0, 4095}}}, Group{ID: 2, Ranges: []Range{{4095, 4096}}}), 2, 1); err == nil {
		t.Fatal("a one-slot group split")
	}
}

func TestWithNewGroupsPlacesThemWithoutSlots(t *testing.T) {
	m := mapOf(t, Group{ID: 1, Ranges: []Range{{0, 4096}}, Replicas: []string{"a", "b", "c"}, Creator: "a"})
	next, ids, err := WithNewGroups(m, 2, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []GroupID{2, 3}) || next.Version != m.Version+1 {
		t.Fatalf("ids %v, version %d", ids, next.Version)
	}
	for _, id := range ids {
		g, _ := next.Group(id)
		if len(g.Ranges) != 0 || len(g.Replicas) != 3 || g.Creator != g.Replicas[0] {
			t.Fatalf("new group %+v", g)
		}
	}
}
