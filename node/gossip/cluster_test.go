package gossip

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/syncstore/syncstore/internal/testutil"
)

func startInCluster(t *testing.T, id, cluster string) *Gossip {
	t.Helper()
	g, err := Start(Config{NodeID: id, BindAddr: "127.0.0.1:0", GRPCAddr: id + ":1", RaftAddr: id + ":2",
		ProbeInterval: 100 * time.Millisecond, ClusterID: cluster}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// Two clusters' gossip stay apart: a node of one that contacts the other
// (a restored cluster's registry holds the old cluster's addresses) is
// refused both ways, while a node with no cluster id yet (joining) is let
// in and takes part once it has the id.
func TestGossipOfTwoClustersDoesNotMerge(t *testing.T) {
	a1, a2 := startInCluster(t, "a1", "cluster-a"), startInCluster(t, "a2", "cluster-a")
	b1, b2 := startInCluster(t, "b1", "cluster-b"), startInCluster(t, "b2", "cluster-b")
	a2.Join([]string{a1.Addr()})
	b2.Join([]string{b1.Addr()})
	waitMembers(t, a1, "a1", "a2")
	waitMembers(t, b1, "b1", "b2")

	b1.Join([]string{a1.Addr()}) // synchronous: the push-pull is refused on both sides
	a2.Join([]string{b2.Addr()})
	// A joiner without an id, then one of cluster-a, are barriers: once a1
	// and a2 see them, whatever b sent before has been processed.
	joiner := startInCluster(t, "a3", "")
	joiner.Join([]string{a1.Addr()})
	waitMembers(t, a2, "a1", "a2", "a3")
	joiner.SetClusterID("cluster-a")
	a4 := startInCluster(t, "a4", "cluster-a")
	a4.Join([]string{a2.Addr()})
	waitMembers(t, a1, "a1", "a2", "a3", "a4")
	waitMembers(t, b1, "b1", "b2")
	for _, g := range []*Gossip{a1, a2, joiner, a4} {
		if ids := memberIDs(g); slices.ContainsFunc(ids, func(id string) bool { return id[0] == 'b' }) {
			t.Fatalf("%s of cluster-a sees %v", g.self, ids)
		}
	}
	if ids := memberIDs(b2); !slices.Equal(ids, []string{"b1", "b2"}) {
		t.Fatalf("b2 of cluster-b sees %v", ids)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, m := range a1.Members() {
			if m.ID == "a3" && m.ClusterID == "cluster-a" && m.KnowsClusterIDs {
				return nil
			}
		}
		return fmt.Errorf("a1 does not see a3's cluster id yet: %+v", a1.Members())
	})
}

func TestGossipRefusesNodesOfAnotherCluster(t *testing.T) {
	meta := func(cluster string) []byte {
		return gossipMeta{grpcAddr: "h:1", raftAddr: "h:2", clusterID: cluster, knowsClusterID: true}.encode(512)
	}
	old := appendGroups(appendGroups(appendGroups(appendString(appendString(nil, "h:1"), "h:2"), nil), nil), nil)
	tests := []struct {
		name   string
		own    string
		peer   string
		meta   []byte
		refuse bool
	}{
		{"same cluster", "c1", "p", meta("c1"), false},
		{"another cluster", "c1", "p", meta("c2"), true},
		{"a peer without an id yet", "c1", "p", meta(""), false},
		{"a peer older than cluster ids", "c1", "p", old, false},
		{"this node without an id", "", "p", meta("c2"), false},
		{"itself", "c1", "self", meta("c2"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &Gossip{self: "self", local: gossipMeta{clusterID: tt.own}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			n := &memberlist.Node{Name: tt.peer, Meta: tt.meta}
			if err := g.NotifyAlive(n); (err != nil) != tt.refuse {
				t.Fatalf("NotifyAlive: %v, want refused %v", err, tt.refuse)
			}
			ok := &memberlist.Node{Name: "other", Meta: meta(tt.own)}
			if err := g.NotifyMerge([]*memberlist.Node{ok, n}); (err != nil) != tt.refuse {
				t.Fatalf("NotifyMerge: %v, want refused %v", err, tt.refuse)
			}
		})
	}
}
