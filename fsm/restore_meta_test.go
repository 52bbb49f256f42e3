package fsm

import (
	"errors"
	"slices"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// TestRebaseRestoredMeta: a restored meta state names only the restoring
// node, in the registry and in every group; the map's version grows; a
// move under way is refused and changes nothing.
func TestRebaseRestoredMeta(t *testing.T) {
	self := Node{ID: "r1", RaftAddr: "127.0.0.1:9001", GRPCAddr: "127.0.0.1:9000", GossipAddr: "127.0.0.1:9002"}
	oldCluster := func(t *testing.T) (*harness, *shard.Map) {
		h := newHarness(t)
		v1, err := shard.Initial(3, "n1", []string{"n1"})
		if err != nil {
			t.Fatal(err)
		}
		v2, err := shard.Place(v1, []string{"n1", "n2", "n3"})
		if err != nil {
			t.Fatal(err)
		}
		for i, cmd := range []*fsmpb.Command{setMapCmd(t, 0, v1), setMapCmd(t, 1, v2)} {
			if r := h.apply(cmd)[0]; r.Err != nil {
				t.Fatalf("map %d: %v", i+1, r.Err)
			}
		}
		for _, id := range []string{"n1", "n2", "n3"} {
			reg := &fsmpb.RegisterNode{NodeId: id, RaftAddr: id + ":1", GrpcAddr: id + ":2", GossipAddr: id + ":3"}
			if r := h.apply(&fsmpb.Command{Op: &fsmpb.Command_RegisterNode{RegisterNode: reg}})[0]; r.Err != nil {
				t.Fatal(r.Err)
			}
		}
		m, _ := h.f.ShardMap()
		return h, m
	}

	t.Run("rebased", func(t *testing.T) {
		h, before := oldCluster(t)
		applied := h.f.AppliedIndex()
		if err := h.f.RebaseRestoredMeta(1000, self); err != nil {
			t.Fatal(err)
		}
		nodes, err := h.f.Nodes()
		if err != nil || len(nodes) != 1 || !nodes[0].SameAddrs(self) || nodes[0].State != NodeActive {
			t.Fatalf("registry after the rebase: %+v, %v", nodes, err)
		}
		m, err := h.f.ShardMap()
		if err != nil || m.Version != before.Version+1 || len(m.Groups) != len(before.Groups) {
			t.Fatalf("map after the rebase: %+v, %v (before v%d)", m, err, before.Version)
		}
		for i, g := range m.Groups {
			if !slices.Equal(g.Replicas, []string{"r1"}) || g.Creator != "r1" || g.Pinned || !slices.Equal(g.Ranges, before.Groups[i].Ranges) {
				t.Fatalf("group %d after the rebase: %+v", g.ID, g)
			}
		}
		if h.f.AppliedIndex() != applied {
			t.Fatalf("the applied index moved from %d to %d", applied, h.f.AppliedIndex())
		}
	})

	t.Run("a move under way", func(t *testing.T) {
		h, _ := oldCluster(t)
		plan := &fsmpb.MovePlan{Target: 2, Ranges: []*fsmpb.SlotRange{{Start: 0, End: 10}}}
		if r := h.apply(&fsmpb.Command{Op: &fsmpb.Command_MovePlan{MovePlan: plan}})[0]; r.Err != nil {
			t.Fatalf("plan a move: %v", r.Err)
		}
		before, _ := h.f.Digest()
		if err := h.f.RebaseRestoredMeta(1000, self); !errors.Is(err, ErrMoveInBackup) {
			t.Fatalf("rebase with a move planned: %v, want ErrMoveInBackup", err)
		}
		if after, _ := h.f.Digest(); after != before {
			t.Fatal("a refused rebase changed the state")
		}
	})

	t.Run("a bad node", func(t *testing.T) {
		h, _ := oldCluster(t)
		if err := h.f.RebaseRestoredMeta(1000, Node{}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("rebase onto a node without an id: %v", err)
		}
	})
}
