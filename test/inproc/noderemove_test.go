package inproc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

const removeTimeout = 90 * time.Second

func removeNode(t *testing.T, c *testcluster.Cluster, id string, dead bool) (*syncv1.RemoveNodeResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var resp *syncv1.RemoveNodeResponse
	err := c.Client().Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
		resp, err = a.RemoveNode(ctx, &syncv1.RemoveNodeRequest{NodeId: id, Dead: dead})
		return err
	})
	return resp, err
}

func memberIndex(c *testcluster.Cluster, id string) int {
	return slices.IndexFunc(c.Members, func(m *testcluster.Member) bool { return m.ID == id })
}

// waitRemovedEverywhere waits until, on every running member other than
// id: the registry says removed, no map group lists it, no group's Raft
// configuration holds it, and the meta configuration does not either.
func waitRemovedEverywhere(t *testing.T, c *testcluster.Cluster, id string, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, func() error {
		for _, m := range c.Members {
			if m.Node == nil || m.ID == id {
				continue
			}
			nodes, err := m.Node.NodeRecords()
			if err != nil {
				return err
			}
			if i := slices.IndexFunc(nodes, func(nd fsm.Node) bool { return nd.ID == id }); i < 0 || nodes[i].State != fsm.NodeRemoved {
				return fmt.Errorf("%s: %s is not marked removed: %+v", m.ID, id, nodes)
			}
			if gs := m.Node.ShardMap().GroupsOn(id); len(gs) > 0 {
				return fmt.Errorf("%s: the map still gives %s groups %v", m.ID, id, gs)
			}
			for _, g := range append(m.Node.Groups(), m.Node.MetaGroup()) {
				members, err := g.Members()
				if err != nil {
					return err
				}
				if slices.ContainsFunc(members, func(mb node.Member) bool { return mb.ID == id }) {
					return fmt.Errorf("%s: group %d still has %s in its configuration", m.ID, g.ID(), id)
				}
			}
		}
		return nil
	})
}

// waitStoppedItself waits until the member found itself removed.
func waitStoppedItself(t *testing.T, m *testcluster.Member, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, func() error {
		select {
		case <-m.Node.Removed():
			return nil
		default:
			return fmt.Errorf("%s has not noticed its removal", m.ID)
		}
	})
}

// checkRestartRefused: a removed node's data dir is refused at start with a
// message saying what to do.
func checkRestartRefused(t *testing.T, m *testcluster.Member) {
	t.Helper()
	cfg := node.DefaultConfig()
	testcluster.FastConfig(&cfg)
	cfg.NodeID, cfg.DataDir, cfg.RaftAddr, cfg.GRPCAddr = m.ID, m.Dir, "127.0.0.1:0", "127.0.0.1:0"
	nd, err := node.Start(cfg)
	if err == nil {
		nd.Close()
		t.Fatalf("%s started again from its removed data dir", m.ID)
	}
	if !errors.Is(err, node.ErrRemoved) || !strings.Contains(err.Error(), "wipe it") {
		t.Fatalf("restart of removed %s: %v, want ErrRemoved telling to wipe the dir", m.ID, err)
	}
}

// checkGroupsOnLive: every group of the map has 3 replicas on live nodes
// and, on its leader, 3 voters and nothing else.
func checkGroupsOnLive(t *testing.T, c *testcluster.Cluster, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, func() error {
		leader := c.Leader()
		if leader < 0 {
			return fmt.Errorf("no meta leader")
		}
		smap := c.Members[leader].Node.ShardMap()
		leaders := c.GroupLeaders()
		for _, sg := range smap.Groups {
			if len(sg.Replicas) != 3 {
				return fmt.Errorf("group %d has replicas %v", sg.ID, sg.Replicas)
			}
			li, ok := leaders[sg.ID]
			if !ok {
				return fmt.Errorf("group %d has no leader", sg.ID)
			}
			members, err := c.Members[li].Node.Group(sg.ID).Members()
			if err != nil {
				return err
			}
			var voters []string
			for _, mb := range members {
				if !mb.Voter {
					return fmt.Errorf("group %d still has non-voter %s", sg.ID, mb.ID)
				}
				if i := memberIndex(c, mb.ID); i < 0 || c.Members[i].Node == nil {
					return fmt.Errorf("group %d has voter %s, which is not running", sg.ID, mb.ID)
				}
				voters = append(voters, mb.ID)
			}
			if len(voters) != 3 {
				return fmt.Errorf("group %d has voters %v", sg.ID, voters)
			}
		}
		return nil
	})
}

// TestRemoveLiveNodeUnderLoad: the meta leader of a four-node cluster is
// removed while writers append. Its replicas move to the other nodes, it
// hands meta leadership away, leaves the meta group, stops itself and
// refuses to start from its data dir again; every acknowledged append is
// present once on every replica.
func TestRemoveLiveNodeUnderLoad(t *testing.T) {
	c := testcluster.New(t, 4, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	names := numbered("rm-%d", 200)
	w := startWorkload(t, c.Client(), "rm", 8, names, 5*time.Second)
	w.progress(t, 300)

	victim := c.WaitLeader(10 * time.Second)
	id := c.Members[victim].ID
	resp, err := removeNode(t, c, id, false)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetState() != "draining" || resp.GetAlready() {
		t.Fatalf("remove %s answered %+v, want draining", id, resp)
	}
	// Safe to repeat: the second call changes nothing and says so.
	if resp, err = removeNode(t, c, id, false); err != nil || !resp.GetAlready() {
		t.Fatalf("second remove: %+v, %v", resp, err)
	}
	waitStoppedItself(t, c.Members[victim], removeTimeout)
	waitRemovedEverywhere(t, c, id, removeTimeout)
	w.progress(t, 300) // writes go on after the removal
	w.finish()
	c.Stop(victim)
	checkRestartRefused(t, c.Members[victim])
	if resp, err = removeNode(t, c, id, false); err != nil || resp.GetState() != "removed" || !resp.GetAlready() {
		t.Fatalf("remove of a removed node: %+v, %v", resp, err)
	}
	checkGroupsOnLive(t, c, 30*time.Second)
	// A removed node takes no replica.
	smap := c.Members[c.WaitLeader(10*time.Second)].Node.ShardMap()
	err = adminCall(t, c, func(ctx context.Context, a syncv1.AdminClient) error {
		_, err := a.MoveReplica(ctx, &syncv1.MoveReplicaRequest{GroupId: 1, From: smap.Groups[0].Replicas[0], To: id})
		return err
	})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("moving a replica to removed %s: %v, want FAILED_PRECONDITION", id, err)
	}
	c.WaitConverged(60 * time.Second)
	t.Logf("acknowledged %d appends; %d writer errors", w.acked.Load(), w.errors.Load())
	checkHistory(t, c, names, w.acks, w.attempted)

	// The removed id joins again from a fresh data dir at the same
	// addresses: it is active and takes replicas again.
	c.Rejoin(victim)
	testutil.Eventually(t, 60*time.Second, func() error {
		meta := c.Members[c.WaitLeader(10*time.Second)].Node
		nodes, err := meta.NodeRecords()
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(nodes, func(nd fsm.Node) bool { return nd.ID == id }); i < 0 || nodes[i].State != fsm.NodeActive {
			return fmt.Errorf("%s rejoined but is not active: %+v", id, nodes)
		}
		if len(meta.ShardMap().GroupsOn(id)) == 0 {
			return fmt.Errorf("%s rejoined but the map gives it no group", id)
		}
		return nil
	})
	c.WaitPlaced(60 * time.Second)
}

// TestDeadNodeTimeoutRemovesAStoppedNode: with --dead-node-timeout the meta
// leader itself removes a node that has been unreachable that long, and
// its replicas are rebuilt on the live nodes.
func TestDeadNodeTimeoutRemovesAStoppedNode(t *testing.T) {
	c := testcluster.New(t, 4, func(cfg *node.Config) {
		cfg.Shards = shardedGroups
		cfg.DeadNodeTimeout = 2 * time.Second
	})
	victim := 3
	if c.Leader() == victim {
		victim = 2
	}
	id := c.Members[victim].ID
	c.Stop(victim)
	waitRemovedEverywhere(t, c, id, removeTimeout)
	checkGroupsOnLive(t, c, 30*time.Second)
	meta := c.Members[c.WaitLeader(10*time.Second)].Node
	nodes, _ := meta.NodeRecords()
	if i := slices.IndexFunc(nodes, func(nd fsm.Node) bool { return nd.ID == id }); i < 0 || !nodes[i].Dead {
		t.Fatalf("%s removed by the timeout is not marked dead: %+v", id, nodes)
	}
}

// TestRemoveDeadNodeRebuildsReplicas: a stopped node of a four-node
// cluster is removed as dead: every group is back to three voters on the
// live nodes, and the node is out of the meta group and marked removed.
func TestRemoveDeadNodeRebuildsReplicas(t *testing.T) {
	c := testcluster.New(t, 4, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	victim := 3
	if c.Leader() == victim {
		victim = 2 // the meta leader's failover is another test's subject
	}
	id := c.Members[victim].ID
	c.Stop(victim)
	resp, err := removeNode(t, c, id, true)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetState() != "draining" || !resp.GetDead() {
		t.Fatalf("remove --dead answered %+v", resp)
	}
	waitRemovedEverywhere(t, c, id, removeTimeout)
	checkGroupsOnLive(t, c, 30*time.Second)
}

// TestRemoveDeadRefusedWhenOneCopyWouldRemain: on two nodes every group
// has two replicas; declaring one dead would leave one copy (and no
// quorum), so it is refused naming the groups, and nothing changes. (The
// node is declared dead while it still runs: with it stopped, two nodes
// have no meta quorum to answer anything.) On four nodes with one stopped,
// declaring a second one dead is refused for exactly the groups that hold
// both. The last active node cannot be removed either.
func TestRemoveDeadRefusedWhenOneCopyWouldRemain(t *testing.T) {
	c := testcluster.New(t, 2, func(cfg *node.Config) { cfg.Shards = 3 })
	leader := c.WaitLeader(10 * time.Second)
	id := c.Members[1-leader].ID
	checkRefused(t, c, id, []shard.GroupID{1, 2, 3}, nil)

	four := testcluster.New(t, 4, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	stopped, victim := 3, 2
	if four.Leader() >= 2 {
		stopped, victim = 0, 1
	}
	smap := four.Members[four.Leader()].Node.ShardMap()
	var both, others []shard.GroupID
	for _, g := range smap.Groups {
		if slices.Contains(g.Replicas, four.Members[stopped].ID) && slices.Contains(g.Replicas, four.Members[victim].ID) {
			both = append(both, g.ID)
		} else {
			others = append(others, g.ID)
		}
	}
	if len(both) == 0 {
		t.Fatalf("no group holds both %s and %s: %+v", four.Members[stopped].ID, four.Members[victim].ID, smap.Groups)
	}
	four.Stop(stopped)
	checkRefused(t, four, four.Members[victim].ID, both, others)

	one := testcluster.New(t, 1, nil)
	if _, err := removeNode(t, one, "n1", false); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("removing the last active node: %v, want FAILED_PRECONDITION", err)
	}
	if _, err := removeNode(t, one, "n9", false); status.Code(err) != codes.NotFound {
		t.Fatalf("removing an unknown node: %v, want NOT_FOUND", err)
	}
	if _, err := removeNode(t, one, "a/b", false); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("removing a bad node id: %v, want INVALID_ARGUMENT", err)
	}
}

// checkRefused: remove --dead of id is FAILED_PRECONDITION naming exactly
// the groups named, and neither the registry nor the map changes.
func checkRefused(t *testing.T, c *testcluster.Cluster, id string, named, notNamed []shard.GroupID) {
	t.Helper()
	meta := c.Members[c.WaitLeader(10*time.Second)].Node
	version := meta.ShardMap().Version
	_, err := removeNode(t, c, id, true)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("remove --dead %s: %v, want FAILED_PRECONDITION", id, err)
	}
	for _, g := range named {
		if !strings.Contains(err.Error(), fmt.Sprintf("group %d ", g)) {
			t.Errorf("the refusal does not name group %d: %v", g, err)
		}
	}
	for _, g := range notNamed {
		if strings.Contains(err.Error(), fmt.Sprintf("group %d ", g)) {
			t.Errorf("the refusal names group %d, which keeps a quorum: %v", g, err)
		}
	}
	nodes, _ := meta.NodeRecords()
	for _, nd := range nodes {
		if nd.State != fsm.NodeActive {
			t.Fatalf("after a refusal %s is %s", nd.ID, nd.State)
		}
	}
	if v := meta.ShardMap().Version; v != version {
		t.Fatalf("after a refusal the map went from v%d to v%d", version, v)
	}
}

// TestRemoveResumesAfterMetaFailover: a live removal under way when the
// meta leader stops (and later comes back) is finished by the next
// leader.
func TestRemoveResumesAfterMetaFailover(t *testing.T) {
	c := testcluster.New(t, 4, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	leader := c.WaitLeader(10 * time.Second)
	victim := (leader + 1) % 4
	id := c.Members[victim].ID
	if _, err := removeNode(t, c, id, false); err != nil {
		t.Fatal(err)
	}
	c.Stop(leader)
	testutil.Eventually(t, 20*time.Second, func() error {
		if l := c.Leader(); l < 0 || l == leader {
			return fmt.Errorf("no new meta leader")
		}
		return nil
	})
	// The new leader knows the removal: repeating it is a no-op.
	if resp, err := removeNode(t, c, id, false); err != nil || !resp.GetAlready() {
		t.Fatalf("remove after the failover: %+v, %v", resp, err)
	}
	c.Restart(leader)
	waitStoppedItself(t, c.Members[victim], removeTimeout)
	waitRemovedEverywhere(t, c, id, removeTimeout)
	c.Stop(victim)
	checkGroupsOnLive(t, c, 30*time.Second)
}

// TestRemovingAMetaVoterPromotesAFollower: with six nodes the meta group
// has five voters and one non-voter; removing a voter promotes the
// non-voter, so the meta group keeps five voters.
func TestRemovingAMetaVoterPromotesAFollower(t *testing.T) {
	c := testcluster.New(t, 6, func(cfg *node.Config) { cfg.Shards = 4 })
	leader := c.WaitLeader(10 * time.Second)
	members, err := c.Members[leader].Node.Members()
	if err != nil {
		t.Fatal(err)
	}
	victim := ""
	for _, m := range members {
		if m.Voter && m.ID != c.Members[leader].ID {
			victim = m.ID
		}
	}
	if _, err := removeNode(t, c, victim, false); err != nil {
		t.Fatal(err)
	}
	waitRemovedEverywhere(t, c, victim, removeTimeout)
	testutil.Eventually(t, 30*time.Second, func() error {
		l := c.Leader()
		if l < 0 {
			return fmt.Errorf("no meta leader")
		}
		members, err := c.Members[l].Node.Members()
		if err != nil {
			return err
		}
		voters := 0
		for _, m := range members {
			if m.Voter {
				voters++
			}
		}
		if voters != node.MaxMetaVoters || len(members) != 5 {
			return fmt.Errorf("meta group has %d voters of %d members, want %d of 5", voters, len(members), node.MaxMetaVoters)
		}
		return nil
	})
}
