package shard

import (
	"slices"
	"testing"
)

// TestPlaceHonoursPinsAndActiveNodes: Place is given the active nodes only;
// a pinned group keeps its replicas and their order unless one of its
// nodes is no longer active, and no group keeps a replica on a node that
// is not listed.
func TestPlaceHonoursPinsAndActiveNodes(t *testing.T) {
	base := func(t *testing.T) *Map {
		m, err := Initial(8, "n1", nodes(4))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	pin := func(m *Map, id GroupID, reps ...string) {
		for i := range m.Groups {
			if m.Groups[i].ID == id {
				m.Groups[i].Replicas, m.Groups[i].Pinned = reps, true
			}
		}
	}
	cases := []struct {
		name   string
		pins   map[GroupID][]string
		nodes  []string
		want   map[GroupID][]string // exact replicas, in order
		wantRF int
		absent string // no group may list this node
	}{
		{
			name:   "a pinned order stays on the same nodes",
			pins:   map[GroupID][]string{1: {"n4", "n3", "n2"}, 2: {"n4", "n2", "n1"}},
			nodes:  nodes(4),
			want:   map[GroupID][]string{1: {"n4", "n3", "n2"}, 2: {"n4", "n2", "n1"}},
			wantRF: 3,
		},
		{
			name:   "a pin stays when a node is added",
			pins:   map[GroupID][]string{3: {"n2", "n1", "n3"}},
			nodes:  nodes(5),
			want:   map[GroupID][]string{3: {"n2", "n1", "n3"}},
			wantRF: 3,
		},
		{
			name:   "a draining node is excluded, even from pinned groups",
			pins:   map[GroupID][]string{1: {"n4", "n3", "n2"}},
			nodes:  []string{"n1", "n2", "n3"},
			want:   map[GroupID][]string{1: {"n3", "n2", "n1"}},
			wantRF: 3,
			absent: "n4",
		},
		{
			name:   "unpinned groups leave a draining node",
			nodes:  []string{"n1", "n2", "n4"},
			wantRF: 3,
			absent: "n3",
		},
		{
			name:   "fewer active nodes than replicas",
			pins:   map[GroupID][]string{5: {"n2", "n1", "n3"}},
			nodes:  []string{"n1", "n2"},
			want:   map[GroupID][]string{5: {"n2", "n1"}},
			wantRF: 2,
			absent: "n3",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := base(t)
			for id, reps := range tc.pins {
				pin(m, id, reps...)
			}
			next, err := Place(m, tc.nodes)
			if err != nil {
				t.Fatal(err)
			}
			// A second round must not move anything either: the reconciler
			// places every round.
			again, err := Place(next, tc.nodes)
			if err != nil {
				t.Fatal(err)
			}
			for _, out := range []*Map{next, again} {
				for _, g := range out.Groups {
					if want, ok := tc.want[g.ID]; ok && !slices.Equal(g.Replicas, want) {
						t.Errorf("v%d group %d: replicas %v, want %v", out.Version, g.ID, g.Replicas, want)
					}
					if _, ok := tc.pins[g.ID]; ok != g.Pinned {
						t.Errorf("v%d group %d: pinned %v, want %v", out.Version, g.ID, g.Pinned, ok)
					}
					if len(g.Replicas) != tc.wantRF {
						t.Errorf("v%d group %d: %d replicas %v, want %d", out.Version, g.ID, len(g.Replicas), g.Replicas, tc.wantRF)
					}
					if tc.absent != "" && slices.Contains(g.Replicas, tc.absent) {
						t.Errorf("v%d group %d keeps a replica on %s: %v", out.Version, g.ID, tc.absent, g.Replicas)
					}
					for _, r := range g.Replicas {
						if !slices.Contains(tc.nodes, r) {
							t.Errorf("v%d group %d: replica on %s, not an active node", out.Version, g.ID, r)
						}
					}
				}
			}
			for i := range next.Groups {
				if !slices.Equal(next.Groups[i].Replicas, again.Groups[i].Replicas) {
					t.Errorf("group %d moved from %v to %v on a second round", next.Groups[i].ID, next.Groups[i].Replicas, again.Groups[i].Replicas)
				}
			}
		})
	}
}
