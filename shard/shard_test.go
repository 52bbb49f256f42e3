package shard

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestSlotOfIsPinned: existing data lives at these slots. If this test fails,
// the change would move timelines to other groups: do not make it.
func TestSlotOfIsPinned(t *testing.T) {
	pinned := []struct {
		id   string
		slot Slot
	}{
		{"", 0},
		{"a", 816}, // CRC-32C("a") = 0xC1D04330
		{"alice", 654},
		{"user:1", 3176},
		{"user:2", 3996},
		{"user:123456789", 1573},
		{"conv:42", 4042},
		{"群聊:9", 1280},
		{"xé", 502},
		{"tl-00", 1873},
		{"tl-49", 3393},
		{"bench-999", 1827},
		// Derived ids live on their user's slot.
		{"devices/alice", 654},
		{"conversations/alice", 654},
		{"device-events/alice", 654},
		{"conversations/devices/alice", 654},
		{"devices/", 930}, // a bare prefix is an ordinary id
	}
	for _, p := range pinned {
		if got := SlotOf(p.id); got != p.slot {
			t.Errorf("SlotOf(%q) = %d, pinned at %d", p.id, got, p.slot)
		}
	}
}

func leaders(m *Map) map[string]int {
	out := map[string]int{}
	for _, g := range m.Groups {
		out[g.Replicas[0]]++
	}
	return out
}

func replicasPerNode(m *Map) map[string]int {
	out := map[string]int{}
	for _, g := range m.Groups {
		for _, r := range g.Replicas {
			out[r]++
		}
	}
	return out
}

func nodes(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("n%d", i+1))
	}
	return out
}

func TestInitialAndPlaceBalance(t *testing.T) {
	cases := []struct {
		groups, nodes       int
		wantRF              int
		maxLeads, maxReplic int
	}{
		{1, 1, 1, 1, 1},
		{8, 1, 1, 8, 8},
		{8, 3, 3, 3, 8},
		{8, 5, 3, 2, 5},
		{16, 4, 3, 4, 12},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%d groups on %d nodes", tc.groups, tc.nodes), func(t *testing.T) {
			m, err := Initial(tc.groups, "n1", nodes(tc.nodes))
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range m.Groups {
				if len(g.Replicas) != tc.wantRF {
					t.Fatalf("group %d has replicas %v, want %d", g.ID, g.Replicas, tc.wantRF)
				}
			}
			for n, l := range leaders(m) {
				if l > tc.maxLeads {
					t.Errorf("%s is preferred leader of %d groups, want at most %d", n, l, tc.maxLeads)
				}
			}
			for n, r := range replicasPerNode(m) {
				if r > tc.maxReplic {
					t.Errorf("%s holds %d replicas, want at most %d", n, r, tc.maxReplic)
				}
			}
		})
	}
}

func TestEverySlotHasOneOwner(t *testing.T) {
	m, err := Initial(7, "n1", nodes(3)) // 4096 is not a multiple of 7
	if err != nil {
		t.Fatal(err)
	}
	count := map[GroupID]int{}
	for s := range SlotCount {
		count[m.GroupOf(Slot(s))]++
	}
	for id, n := range count {
		if n < SlotCount/7 || n > SlotCount/7+1 {
			t.Errorf("group %d owns %d slots", id, n)
		}
	}
	if g := m.GroupFor("a"); g != m.GroupOf(816) {
		t.Errorf("GroupFor(a) = %d, slot 816's owner is %d", g, m.GroupOf(816))
	}
}

func TestGrowingTheClusterKeepsReplicasAndRaisesVersion(t *testing.T) {
	one, err := Initial(8, "n1", nodes(1))
	if err != nil {
		t.Fatal(err)
	}
	three, err := Place(one, nodes(3))
	if err != nil {
		t.Fatal(err)
	}
	if three.Version != one.Version+1 {
		t.Fatalf("version %d after %d", three.Version, one.Version)
	}
	for _, g := range three.Groups {
		if !slices.Contains(g.Replicas, "n1") || len(g.Replicas) != 3 {
			t.Fatalf("group %d: replicas %v; want n1 kept and 3 replicas", g.ID, g.Replicas)
		}
	}
	for n, l := range leaders(three) {
		if l > 3 {
			t.Errorf("%s is preferred leader of %d groups", n, l)
		}
	}
	four, err := Place(three, nodes(4))
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for i, g := range four.Groups {
		for _, r := range g.Replicas {
			if !slices.Contains(three.Groups[i].Replicas, r) {
				moved++
			}
		}
	}
	// 24 replicas over 4 nodes: the new node takes 6, no more moves than that.
	if moved != 6 {
		t.Errorf("adding a fourth node moved %d replicas, want 6", moved)
	}
	// Placing again changes nothing but the version.
	again, err := Place(four, nodes(4))
	if err != nil {
		t.Fatal(err)
	}
	for i := range again.Groups {
		if !slices.Equal(again.Groups[i].Replicas, four.Groups[i].Replicas) {
			t.Errorf("group %d moved from %v to %v on a no-op placement", again.Groups[i].ID, four.Groups[i].Replicas, again.Groups[i].Replicas)
		}
	}
}

func TestNewRejectsBadMaps(t *testing.T) {
	full := []Range{{0, SlotCount}}
	cases := []struct {
		name   string
		groups []Group
		want   error
	}{
		{"unowned slot", []Group{{ID: 1, Ranges: []Range{{0, SlotCount - 1}}, Replicas: []string{"a"}}}, ErrSlotUnowned},
		{"overlap", []Group{{ID: 1, Ranges: full, Replicas: []string{"a"}}, {ID: 2, Ranges: []Range{{5, 6}}, Replicas: []string{"a"}}}, ErrSlotOwnedTwice},
		{"meta id", []Group{{ID: MetaGroup, Ranges: full, Replicas: []string{"a"}}}, ErrBadGroup},
		{"no replicas", []Group{{ID: 1, Ranges: full}}, ErrBadGroup},
		{"repeated replica", []Group{{ID: 1, Ranges: full, Replicas: []string{"a", "a"}}}, ErrBadGroup},
		{"empty range", []Group{{ID: 1, Ranges: []Range{{3, 3}, {0, SlotCount}}, Replicas: []string{"a"}}}, ErrBadGroup},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(1, tc.groups); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
