package inproc

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// clusterIDOf checks that every running member of c has one cluster id,
// in memory, in its data dir and in its NodeStatus, and returns it.
func clusterIDOf(t *testing.T, c *testcluster.Cluster) string {
	t.Helper()
	var id string
	testutil.Eventually(t, 10*time.Second, func() error {
		id = ""
		for _, m := range c.Members {
			if m.Node == nil {
				continue
			}
			onDisk, err := node.ReadClusterID(m.Dir)
			if err != nil {
				return err
			}
			st, err := m.Node.Status()
			if err != nil {
				return err
			}
			got := m.Node.ClusterID()
			if got == "" || onDisk != got || st.ClusterID != got {
				return fmt.Errorf("%s: cluster id %q, data dir %q, status %q", m.ID, got, onDisk, st.ClusterID)
			}
			if id != "" && got != id {
				return fmt.Errorf("%s has cluster id %s, another member %s", m.ID, got, id)
			}
			id = got
		}
		return nil
	})
	return id
}

// (e) and (f): every member of a cluster has its id, over gRPC too; a
// restart keeps it; a node joining on an empty data dir gets and stores it.
func TestClusterIDIsSharedKeptAndGivenToJoiners(t *testing.T) {
	c := testcluster.New(t, 2, nil)
	id := clusterIDOf(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range c.Members {
		st, err := syncv1.NewAdminClient(dialRaw(t, m.GRPCAddr)).NodeStatus(ctx, &syncv1.NodeStatusRequest{})
		if err != nil || st.GetClusterId() != id {
			t.Fatalf("%s: NodeStatus cluster_id %q (%v), want %s", m.ID, st.GetClusterId(), err, id)
		}
	}
	for i := range c.Members {
		c.Stop(i)
		c.Restart(i)
		if got := clusterIDOf(t, c); got != id {
			t.Fatalf("after restarting %s the cluster id is %s, was %s", c.Members[i].ID, got, id)
		}
	}
	n3 := c.AddMember()
	if got := clusterIDOf(t, c); got != id || n3.Node.ClusterID() != id {
		t.Fatalf("the joiner has %q, the cluster %s", n3.Node.ClusterID(), id)
	}
}

// (a), (b), (c): two clusters bootstrapped apart stand for an old cluster
// and its restored copy. A node of either is refused when asked to join
// the other, whether its Join names its cluster or not (the serving side
// reads it from the node's status), and nothing changes; a Raft connection
// from one to the other is refused even when a membership change is
// forced past Join.
func TestClustersStayApart(t *testing.T) {
	a := testcluster.New(t, 2, nil)
	b := testcluster.NewNamed(t, "b", 1, nil)
	idA, idB := clusterIDOf(t, a), clusterIDOf(t, b)
	if idA == idB {
		t.Fatalf("two bootstrapped clusters have the same id %s", idA)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	join := func(m *testcluster.Member, sendsID string) *syncv1.JoinRequest {
		return &syncv1.JoinRequest{NodeId: m.ID, RaftAddr: m.RaftAddr, GrpcAddr: m.GRPCAddr, GossipAddr: m.GossipAddr, ClusterId: sendsID}
	}
	cases := []struct {
		name   string
		into   *testcluster.Cluster
		joiner *testcluster.Member
		req    *syncv1.JoinRequest
		msg    []string
	}{
		{"(a) a node of B naming its cluster", a, b.Members[0], join(b.Members[0], idB), []string{idA, idB}},
		{"(a) a node of B naming none", a, b.Members[0], join(b.Members[0], ""), []string{idA, idB}},
		{"(b) a node of A naming its cluster", b, a.Members[1], join(a.Members[1], idA), []string{idA, idB}},
		{"(b) a node of A naming none", b, a.Members[1], join(a.Members[1], ""), []string{idA, idB}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := groupDigests(t, tc.into, shard.MetaGroup)
			for _, m := range tc.into.Members { // followers forward to the meta leader
				_, err := syncv1.NewAdminClient(dialRaw(t, m.GRPCAddr)).Join(ctx, tc.req)
				for _, s := range tc.msg {
					wantCode(t, err, codes.FailedPrecondition, s)
				}
			}
			if after := groupDigests(t, tc.into, shard.MetaGroup); !maps.Equal(before, after) {
				t.Fatalf("the meta state changed: %v -> %v", before, after)
			}
			for _, m := range tc.into.Members {
				members, err := m.Node.Members()
				if err != nil || len(members) != len(tc.into.Members) {
					t.Fatalf("%s: meta configuration %+v, %v", m.ID, members, err)
				}
			}
		})
	}
	if got := b.Members[0].Node.ClusterID(); got != idB {
		t.Fatalf("b1 changed cluster: %s", got)
	}
	noneOf(t, a, "b")
	noneOf(t, b, "n")

	// (c) A membership change forced past Join: B's leader adds a node of
	// A to its meta group. That node's Raft port refuses the connections
	// of B's leader, so it never takes B's log; A's groups never list a
	// node of B.
	forcedAddRefused(t, b, a, a.Members[1])
	noneOf(t, a, "b")
}

// forcedAddRefused has from's meta leader add target, a member of
// cluster into, to its meta group, past Join: target's Raft port refuses
// the connections, so into's meta state and target's cluster id do not
// change.
func forcedAddRefused(t *testing.T, from, into *testcluster.Cluster, target *testcluster.Member) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := target.Node.ClusterID()
	var before map[string]string
	testutil.Eventually(t, 20*time.Second, func() error { // quiet: every replica at one state
		before = groupDigests(t, into, shard.MetaGroup)
		if len(slices.Compact(slices.Sorted(maps.Values(before)))) != 1 {
			return fmt.Errorf("the meta replicas differ: %v", before)
		}
		return nil
	})
	refused := target.Node.ForeignRaftConnsRefused()
	leader := from.Members[from.WaitLeader(10*time.Second)].Node
	nd := fsm.Node{ID: target.ID, RaftAddr: target.RaftAddr, GRPCAddr: target.GRPCAddr, GossipAddr: target.GossipAddr}
	if _, _, err := leader.AddLearner(ctx, nd); err != nil {
		t.Fatalf("forced add: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := target.Node.ForeignRaftConnsRefused(); n <= refused {
			return fmt.Errorf("%s has refused %d raft connections", target.ID, n)
		}
		return nil
	})
	if after := groupDigests(t, into, shard.MetaGroup); !maps.Equal(before, after) {
		t.Fatalf("the meta state of %s's cluster changed: %v -> %v", target.ID, before, after)
	}
	if got := target.Node.ClusterID(); got != id {
		t.Fatalf("%s moved from cluster %s to %s", target.ID, id, got)
	}
}

// noneOf checks that no group of c's members (the meta group included)
// lists a node whose id starts with prefix, and that their gossip has
// not let one in.
func noneOf(t *testing.T, c *testcluster.Cluster, prefix string) {
	t.Helper()
	for _, m := range c.Members {
		groups := append([]*node.Group{m.Node.MetaGroup()}, m.Node.Groups()...)
		for _, g := range groups {
			members, err := g.Members()
			if err != nil {
				t.Fatal(err)
			}
			for _, mb := range members {
				if strings.HasPrefix(mb.ID, prefix) {
					t.Fatalf("%s: group %d lists %s of the other cluster", m.ID, g.ID(), mb.ID)
				}
			}
		}
		for _, gm := range m.Node.Gossip() {
			if strings.HasPrefix(gm.ID, prefix) {
				t.Fatalf("%s's gossip lists %s of the other cluster", m.ID, gm.ID)
			}
		}
	}
}
