package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/shard"
)

// TestCheckDeadRemoval: declaring a node dead is refused, naming the
// groups, exactly when a group it is in would keep fewer than two voters
// or no majority of them, counting removed, declared-dead and unreachable
// nodes as gone; groups without it do not matter.
func TestCheckDeadRemoval(t *testing.T) {
	reg := func(states map[string]fsm.Node) []fsm.Node {
		var out []fsm.Node
		for _, id := range []string{"n1", "n2", "n3", "n4", "n5"} {
			nd := states[id]
			nd.ID = id
			out = append(out, nd)
		}
		return out
	}
	voters := func(ids ...string) groupView {
		var v groupView
		for _, id := range ids {
			v.Members = append(v.Members, Member{ID: id, Voter: true})
		}
		return v
	}
	m, err := shard.New(1, []shard.Group{
		{ID: 1, Ranges: []shard.Range{{Start: 0, End: 2048}}, Replicas: []string{"n1", "n2", "n3"}},
		{ID: 2, Ranges: []shard.Range{{Start: 2048, End: 4096}}, Replicas: []string{"n3", "n4"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name        string
		id          string
		nodes       map[string]fsm.Node
		groups      map[shard.GroupID]groupView
		unreachable map[string]string
		refused     []string // groups named, "" when allowed
	}{
		{name: "one of three", id: "n1",
			groups: map[shard.GroupID]groupView{1: voters("n1", "n2", "n3"), 2: voters("n3", "n4")}},
		{name: "one of two", id: "n4",
			groups:  map[shard.GroupID]groupView{1: voters("n1", "n2", "n3"), 2: voters("n3", "n4")},
			refused: []string{"group 2 would lose all but one copy"}},
		{name: "in both groups", id: "n3",
			groups:  map[shard.GroupID]groupView{1: voters("n1", "n2", "n3"), 2: voters("n3", "n4")},
			refused: []string{"group 2 "}},
		{name: "a second dead voter", id: "n1", nodes: map[string]fsm.Node{"n2": {State: fsm.NodeDraining, Dead: true}},
			groups:  map[shard.GroupID]groupView{1: voters("n1", "n2", "n3"), 2: voters("n3", "n4")},
			refused: []string{"group 1 would lose all but one copy", "n2 declared dead"}},
		{name: "an unreachable voter", id: "n1", unreachable: map[string]string{"n3": "timeout"},
			groups:  map[shard.GroupID]groupView{1: voters("n1", "n2", "n3"), 2: voters("n3", "n4")},
			refused: []string{"group 1 ", "n3 not answering"}},
		{name: "half of four voters mid-rebuild", id: "n1", nodes: map[string]fsm.Node{"n2": {State: fsm.NodeRemoved}},
			groups:  map[shard.GroupID]groupView{1: voters("n1", "n2", "n3", "n5"), 2: voters("n3", "n4")},
			refused: []string{"group 1 would lose its quorum"}},
		{name: "the last copy", id: "n4",
			groups:  map[shard.GroupID]groupView{1: voters("n1", "n2", "n3"), 2: voters("n4")},
			refused: []string{"group 2 would lose its last copy"}},
		{name: "no replica answered: the map decides", id: "n4",
			groups:  map[shard.GroupID]groupView{1: voters("n1", "n2", "n3")},
			refused: []string{"group 2 "}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := clusterView{groups: tc.groups, unreachable: tc.unreachable}
			if v.unreachable == nil {
				v.unreachable = map[string]string{}
			}
			err := checkDeadRemoval(tc.id, reg(tc.nodes), m, v)
			if len(tc.refused) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrWouldLoseQuorum) {
				t.Fatalf("err %v, want ErrWouldLoseQuorum", err)
			}
			for _, want := range tc.refused {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%v lacks %q", err, want)
				}
			}
		})
	}
}
