package inproc

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

func adminCall(t *testing.T, c *testcluster.Cluster, fn func(context.Context, syncv1.AdminClient) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.Client().Admin(ctx, fn)
}

// groupConfig is a group's voters and leader as its leader reports them.
func groupConfig(c *testcluster.Cluster, id shard.GroupID) (leader string, voters []string, err error) {
	li, ok := c.GroupLeaders()[id]
	if !ok {
		return "", nil, fmt.Errorf("group %d has no leader", id)
	}
	members, err := c.Members[li].Node.Group(id).Members()
	if err != nil {
		return "", nil, err
	}
	for _, m := range members {
		if !m.Voter {
			return "", nil, fmt.Errorf("group %d: %s is still a non-voter", id, m.ID)
		}
		voters = append(voters, m.ID)
	}
	slices.Sort(voters)
	return c.Members[li].ID, voters, nil
}

// TestOperatorMovesAreDoneAndStay: on four nodes a replica of a group is
// moved to the node that has none and leadership handed to it. Both
// happen, and later reconcile rounds (placement runs every round) undo
// neither. Bad requests are refused with the right code and change nothing.
func TestOperatorMovesAreDoneAndStay(t *testing.T) {
	c := testcluster.New(t, 4, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	meta := c.Members[c.WaitLeader(10*time.Second)].Node
	const id = shard.GroupID(1)
	before, _ := meta.ShardMap().Group(id)
	var to, from string
	for _, m := range c.Members {
		if !slices.Contains(before.Replicas, m.ID) {
			to = m.ID
		}
	}
	from = before.Replicas[1] // not the preferred leader
	version := meta.ShardMap().Version

	refusals := []struct {
		name string
		call func(context.Context, syncv1.AdminClient) error
		code codes.Code
	}{
		{"to a replica already", func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.MoveReplica(ctx, &syncv1.MoveReplicaRequest{GroupId: 1, From: from, To: before.Replicas[0]})
			return err
		}, codes.FailedPrecondition},
		{"from an unknown node", func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.MoveReplica(ctx, &syncv1.MoveReplicaRequest{GroupId: 1, From: "n9", To: to})
			return err
		}, codes.NotFound},
		{"to an unknown node", func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.MoveReplica(ctx, &syncv1.MoveReplicaRequest{GroupId: 1, From: from, To: "n9"})
			return err
		}, codes.NotFound},
		{"from and to the same", func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.MoveReplica(ctx, &syncv1.MoveReplicaRequest{GroupId: 1, From: from, To: from})
			return err
		}, codes.InvalidArgument},
		{"unknown group", func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.MoveReplica(ctx, &syncv1.MoveReplicaRequest{GroupId: 99, From: from, To: to})
			return err
		}, codes.NotFound},
		{"unknown node", func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.TransferLeader(ctx, &syncv1.TransferLeaderRequest{GroupId: 1, To: "n9"})
			return err
		}, codes.NotFound},
		{"leader not a replica", func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.TransferLeader(ctx, &syncv1.TransferLeaderRequest{GroupId: 1, To: to})
			return err
		}, codes.FailedPrecondition},
		{"meta group", func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.TransferLeader(ctx, &syncv1.TransferLeaderRequest{GroupId: 0, To: to})
			return err
		}, codes.InvalidArgument},
	}
	for _, r := range refusals {
		if err := adminCall(t, c, r.call); status.Code(err) != r.code {
			t.Errorf("%s: %v, want %s", r.name, err, r.code)
		}
	}
	if v := meta.ShardMap().Version; v != version {
		t.Fatalf("refused requests moved the map from v%d to v%d", version, v)
	}

	var resp *syncv1.ShardChangeResponse
	err := adminCall(t, c, func(ctx context.Context, a syncv1.AdminClient) (err error) {
		resp, err = a.MoveReplica(ctx, &syncv1.MoveReplicaRequest{GroupId: 1, From: from, To: to})
		return err
	})
	if err != nil || !resp.GetChanged() || !slices.Contains(resp.GetReplicas(), to) || slices.Contains(resp.GetReplicas(), from) {
		t.Fatalf("move %s -> %s: %+v, %v", from, to, resp, err)
	}
	want := slices.Sorted(slices.Values(resp.GetReplicas()))
	testutil.Eventually(t, 60*time.Second, func() error {
		_, voters, err := groupConfig(c, id)
		if err != nil {
			return err
		}
		if !slices.Equal(voters, want) {
			return fmt.Errorf("group %d voters %v, want %v", id, voters, want)
		}
		return nil
	})
	err = adminCall(t, c, func(ctx context.Context, a syncv1.AdminClient) (err error) {
		resp, err = a.TransferLeader(ctx, &syncv1.TransferLeaderRequest{GroupId: 1, To: to})
		return err
	})
	if err != nil || resp.GetReplicas()[0] != to {
		t.Fatalf("transfer-leader to %s: %+v, %v", to, resp, err)
	}
	pinned := resp.GetReplicas()
	testutil.Eventually(t, 60*time.Second, func() error {
		leader, _, err := groupConfig(c, id)
		if err != nil {
			return err
		}
		if leader != to {
			return fmt.Errorf("group %d is led by %s, want %s", id, leader, to)
		}
		return nil
	})

	// Later rounds change neither: every member does 30 more rounds.
	target := map[*node.Node]uint64{}
	for _, m := range c.Members {
		target[m.Node] = m.Node.ReconcileRounds() + 30
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		leader, voters, err := groupConfig(c, id)
		if err != nil {
			return err
		}
		g, _ := c.Members[c.WaitLeader(10*time.Second)].Node.ShardMap().Group(id)
		if leader != to || !slices.Equal(voters, want) || !slices.Equal(g.Replicas, pinned) || !g.Pinned {
			t.Fatalf("undone: group %d led by %s with voters %v, map %v (pinned %v); want %s, %v, %v", id, leader, voters, g.Replicas, g.Pinned, to, want, pinned)
		}
		for nd, r := range target {
			if nd.ReconcileRounds() < r {
				return fmt.Errorf("%s has done %d of %d rounds", nd.ID(), nd.ReconcileRounds(), r)
			}
		}
		return nil
	})
}
