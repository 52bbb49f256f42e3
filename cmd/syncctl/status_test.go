package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/server"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// replica is one group replica's status for the view tests.
func replica(group uint64, state string, term, commit, applied, last uint64, voters ...string) *syncv1.GroupStatus {
	g := &syncv1.GroupStatus{GroupId: group, State: state, Term: term, CommitIndex: commit, AppliedIndex: applied, LastLogIndex: last}
	for _, v := range voters {
		g.Members = append(g.Members, &syncv1.Member{NodeId: v, Suffrage: "Voter"})
	}
	return g
}

// member is a node's status: in the meta configuration of n1, n2, n3 and
// on shard map v2 unless changed.
func member(id string, groups ...*syncv1.GroupStatus) *syncv1.NodeStatusResponse {
	n := &syncv1.NodeStatusResponse{NodeId: id, State: "Follower", ShardMapVersion: 2, Groups: groups}
	for _, m := range []string{"n1", "n2", "n3"} {
		n.Members = append(n.Members, &syncv1.Member{NodeId: m, Suffrage: "Voter"})
	}
	return n
}

func exitCode(err error) int {
	var ec interface{ ExitCode() int }
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return exitFailed
}

// TestStatusView: what status makes of the nodes' reports: a follower
// Raft has not told the commit index since it started is catching up, not
// a whole log behind; a group without a leader or quorum, or a meta group
// without a leader, is degraded (exit 3); a node in no cluster, or a
// cluster without a shard map, says so (exit 4).
func TestStatusView(t *testing.T) {
	voters := []string{"n1", "n2", "n3"}
	leader := func(commit uint64) *syncv1.GroupStatus {
		return replica(1, "Leader", 2, commit, commit, commit, voters...)
	}
	follower := func(commit, applied, last uint64) *syncv1.GroupStatus {
		return replica(1, "Follower", 2, commit, applied, last, voters...)
	}
	resp := func(metaLeader string, nodes ...*syncv1.NodeStatusResponse) *syncv1.ClusterStatusResponse {
		return &syncv1.ClusterStatusResponse{ServedBy: "n1", LeaderId: metaLeader, Nodes: nodes, Unreachable: map[string]string{}}
	}
	cases := []struct {
		name       string
		resp       *syncv1.ClusterStatusResponse
		lag        map[string]uint64
		catchingUp []string
		exit       int
		says       string
	}{
		{"caught up and a little behind",
			resp("n1", member("n1", leader(100)), member("n2", follower(100, 100, 100)), member("n3", follower(99, 98, 100))),
			map[string]uint64{"n2": 0, "n3": 2}, nil, 0, "n2:0 n3:2"},
		{"restarted, commit index not known yet",
			resp("n1", member("n1", leader(1220)), member("n2", follower(1220, 1220, 1220)), member("n3", follower(0, 0, 38))),
			map[string]uint64{"n2": 0}, []string{"n3"}, 0, "n2:0 n3:catching up"},
		{"restarted from a snapshot",
			resp("n1", member("n1", leader(1220)), member("n2", follower(1220, 1220, 1220)), member("n3", follower(0, 500, 1100))),
			map[string]uint64{"n2": 0}, []string{"n3"}, 0, "n3:catching up"},
		{"replaying what it learned is committed",
			resp("n1", member("n1", leader(1220)), member("n2", follower(1220, 1220, 1220)), member("n3", follower(984, 900, 1220))),
			map[string]uint64{"n2": 0, "n3": 320}, nil, 0, "n3:320"},
		{"a majority down", func() *syncv1.ClusterStatusResponse {
			r := resp("n1", member("n1", leader(100)))
			r.Unreachable = map[string]string{"n2": "connection refused", "n3": "connection refused"}
			return r
		}(), map[string]uint64{}, nil, exitDegraded, "quorum: MISSING: group 1 has no quorum"},
		{"no leader",
			resp("n1", member("n1", follower(100, 100, 100)), member("n2", follower(100, 100, 100))),
			map[string]uint64{}, nil, exitDegraded, "group 1 has no leader"},
		{"no meta leader",
			resp("", member("n1", leader(100)), member("n2", follower(100, 100, 100)), member("n3", follower(100, 100, 100))),
			map[string]uint64{"n2": 0, "n3": 0}, nil, exitDegraded, "the meta group has no leader"},
		{"a group no replica answered for", func() *syncv1.ClusterStatusResponse {
			n1 := member("n1", leader(100))
			n1.Gossip = []*syncv1.GossipMember{{NodeId: "n4", Health: "dead", Hosts: []uint64{1, 7}}}
			return resp("n1", n1, member("n2", follower(100, 100, 100)))
		}(), map[string]uint64{"n2": 0}, nil, exitDegraded, "group 7: no replica answered"},
		{"not joined", resp("", &syncv1.NodeStatusResponse{NodeId: "n1", State: "Follower"}),
			nil, nil, exitNoCluster, "n1 has not joined a cluster"},
		{"not joined, older server", resp(""), nil, nil, exitNoCluster, "n1 has not joined a cluster"},
		{"no shard map yet", func() *syncv1.ClusterStatusResponse {
			n1 := member("n1")
			n1.ShardMapVersion = 0
			return resp("n1", n1)
		}(), nil, nil, exitNoCluster, "no shard map yet"},
	}
	for _, tc := range cases {
		v := statusView(tc.resp)
		if tc.lag != nil {
			if len(v.Groups) == 0 {
				t.Errorf("%s: no group in the view", tc.name)
				continue
			}
			if g := v.Groups[0]; !mapsEqual(g.Lag, tc.lag) || !slices.Equal(g.CatchingUp, tc.catchingUp) {
				t.Errorf("%s: lag %v catching up %v, want %v and %v", tc.name, g.Lag, g.CatchingUp, tc.lag, tc.catchingUp)
			}
		}
		if got := exitCode(v.exitErr()); got != tc.exit {
			t.Errorf("%s: exit %d (%v), want %d", tc.name, got, v.exitErr(), tc.exit)
		}
		var out strings.Builder
		printStatus(&out, v)
		if !strings.Contains(out.String(), tc.says) {
			t.Errorf("%s: the status does not say %q:\n%s", tc.name, tc.says, out.String())
		}
		if tc.exit != 0 && strings.Contains(out.String(), "every group has one") {
			t.Errorf("%s: the status says every group has a quorum:\n%s", tc.name, out.String())
		}
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestStatusAfterRestart: a follower restarted after missing nothing is
// never shown further behind than it is. Asked right after its restart,
// it knew no commit index yet and status showed its whole log as its lag
// (38 entries here, seconds of it with production timeouts).
func TestStatusAfterRestart(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 200 {
		if _, err := cl.Append(ctx, fmt.Sprintf("t%d", i%20), []byte("x"), client.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitConverged(30 * time.Second)
	c.Stop(2)
	// The leaders' heartbeats to n3 fail and Raft backs off before it
	// sends n3 anything after its restart.
	testutil.Eventually(t, 15*time.Second, func() error {
		for _, m := range c.Members[0].Node.Gossip() {
			if m.ID == "n3" && m.Health != node.HealthAlive {
				return nil
			}
		}
		return fmt.Errorf("n1's gossip still sees n3 alive")
	})
	c.Restart(2)
	n3, err := client.New([]string{c.Members[2].GRPCAddr}, client.Options{Pinned: true, AttemptTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer n3.Close()
	// Ask n3, as an operator who just restarted it would, until every
	// group shows it caught up; no view may show it behind (nothing was
	// written meanwhile; a few entries of slack for the cluster's own).
	const slack = 5
	unknown := 0
	testutil.Eventually(t, 30*time.Second, func() error {
		var resp *syncv1.ClusterStatusResponse
		err := n3.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
			resp, err = a.ClusterStatus(ctx, &syncv1.ClusterStatusRequest{})
			return err
		})
		if err != nil {
			return err
		}
		v := statusView(resp)
		caughtUp := 0
		var behind []string
		for _, g := range v.Groups {
			if lag, ok := g.Lag["n3"]; ok && lag > slack {
				t.Fatalf("group %d: n3 shown %d entries behind after a restart that missed nothing", g.ID, lag)
			}
			if slices.Contains(g.CatchingUp, "n3") {
				unknown++
			} else if lag, ok := g.Lag["n3"]; (ok && lag == 0) || g.Leader == "n3" {
				caughtUp++ // or took its preferred groups back
			} else {
				behind = append(behind, fmt.Sprintf("group %d: %+v", g.ID, g))
			}
		}
		if caughtUp < len(v.Groups) || len(v.Groups) == 0 {
			return fmt.Errorf("n3 caught up in %d of %d groups: %s", caughtUp, len(v.Groups), strings.Join(behind, "; "))
		}
		return nil
	})
	t.Logf("n3 was shown catching up %d times", unknown)
}

// TestStatusExitCodes: status exits 3 when a group has lost its quorum (a
// majority of its replicas stopped), and 4 from a node that has not joined
// a cluster; the status is printed either way.
func TestStatusExitCodes(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	out, err := run(t, c.Members[0].GRPCAddr, "status")
	if err != nil {
		t.Fatalf("status of a whole cluster: %v\n%s", err, out)
	}
	c.Stop(1)
	c.Stop(2)
	out, err = run(t, c.Members[0].GRPCAddr, "status")
	if got := exitCode(err); got != exitDegraded {
		t.Errorf("status with two of three nodes stopped: exit %d (%v), want %d\n%s", got, err, exitDegraded, out)
	}
	if !strings.Contains(out, "quorum: MISSING") || !strings.Contains(out, "NO") {
		t.Errorf("the status does not show the missing quorum:\n%s", out)
	}
	out, err = run(t, c.Members[0].GRPCAddr, "status", "--json")
	if got := exitCode(err); got != exitDegraded || !strings.Contains(out, `"degraded"`) {
		t.Errorf("status --json with two of three nodes stopped: exit %d (%v), want %d\n%s", got, err, exitDegraded, out)
	}

	addr := startUnjoined(t)
	out, err = run(t, addr, "status")
	if got := exitCode(err); got != exitNoCluster {
		t.Errorf("status of a node that has not joined: exit %d (%v), want %d\n%s", got, err, exitNoCluster, out)
	}
	if !strings.Contains(out, "n9 has not joined a cluster") || strings.Contains(out, "every group has one") {
		t.Errorf("the status of a node that has not joined:\n%s", out)
	}
}

// startUnjoined starts a node that neither bootstraps nor joins, as one
// whose --join has not got through, and returns its gRPC address.
func startUnjoined(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.RaftAddr, cfg.GRPCAddr = "n9", t.TempDir(), "127.0.0.1:0", lis.Addr().String()
	testcluster.FastConfig(&cfg)
	nd, err := node.Start(cfg)
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	srv := server.New(nd, cfg.Logger)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
		nd.Close()
	})
	return lis.Addr().String()
}
