// Package testcluster runs a syncstore cluster inside a test process: each
// member is a node and its gRPC server on 127.0.0.1, with its own data dir,
// and can be stopped and restarted on the same addresses.
package testcluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/server"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// Member is one node of the cluster.
type Member struct {
	ID         string
	Dir        string
	RaftAddr   string
	GRPCAddr   string
	GossipAddr string
	Node       *node.Node // nil while stopped
	server     *server.Server
	peerClient *server.PeerClient
	served     chan error
}

// Cluster is a set of members.
type Cluster struct {
	t          testing.TB
	tweak      func(*node.Config)
	serverOpts []server.Option
	prefix     string // of member ids: n1, n2, ...
	Members    []*Member
}

// FastConfig shortens Raft timings for tests and keeps logs quiet.
func FastConfig(c *node.Config) {
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.ApplyTimeout = 5 * time.Second
	c.ReconcileInterval = 100 * time.Millisecond
	c.GossipAddr = "127.0.0.1:0"
	c.GossipProbeInterval = 200 * time.Millisecond
	c.Logger = slog.New(slog.NewTextHandler(logOut(), nil))
}

// New starts an n-member cluster: the first member bootstraps, the others
// join through it. tweak (may be nil) adjusts every member's config after
// FastConfig and the peer client's Prober and Deliverer are set. Everything is stopped when the test ends.
func New(t testing.TB, n int, tweak func(*node.Config), serverOpts ...server.Option) *Cluster {
	t.Helper()
	return NewNamed(t, "n", n, tweak, serverOpts...)
}

// NewNamed is New with member ids prefix1, prefix2, ...: two clusters of
// one test then have distinct node ids.
func NewNamed(t testing.TB, prefix string, n int, tweak func(*node.Config), serverOpts ...server.Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, tweak: tweak, serverOpts: serverOpts, prefix: prefix}
	for i := range n {
		c.Members = append(c.Members, &Member{ID: fmt.Sprintf("%s%d", prefix, i+1), Dir: t.TempDir(), RaftAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0"})
	}
	// Registered after the TempDirs so it runs before their removal.
	t.Cleanup(c.StopAll)
	for i, m := range c.Members {
		c.start(m, i == 0)
		if i == 0 {
			c.WaitLeader(10 * time.Second)
			continue
		}
		c.join(m)
	}
	c.waitRegistered(10 * time.Second)
	c.WaitPlaced(30 * time.Second)
	return c
}

// join joins m as syncd does: its cluster id in the request, the answer's
// recorded.
func (c *Cluster) join(m *Member) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var resp *syncv1.JoinResponse
	err := c.Client().Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
		resp, err = a.Join(ctx, &syncv1.JoinRequest{NodeId: m.ID, RaftAddr: m.RaftAddr, GrpcAddr: m.GRPCAddr, GossipAddr: m.GossipAddr,
			ClusterId: m.Node.ClusterID()})
		return err
	})
	if err == nil {
		err = m.Node.AdoptClusterID(resp.GetClusterId())
	}
	if err != nil {
		c.t.Fatalf("join %s: %v", m.ID, err)
	}
}

// AddMember starts one more node, joins it to the cluster and waits until
// the groups are placed again.
func (c *Cluster) AddMember() *Member {
	c.t.Helper()
	m := &Member{ID: fmt.Sprintf("%s%d", c.prefix, len(c.Members)+1), Dir: c.t.TempDir(), RaftAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0"}
	c.Members = append(c.Members, m)
	c.start(m, false)
	c.join(m)
	c.waitRegistered(10 * time.Second)
	testutil.Eventually(c.t, 30*time.Second, func() error {
		for _, o := range c.Members {
			if o.Node == nil {
				continue
			}
			if smap := o.Node.ShardMap(); smap == nil || len(smap.GroupsOn(m.ID)) == 0 {
				return fmt.Errorf("%s's shard map gives %s no group yet", o.ID, m.ID)
			}
		}
		return nil
	})
	c.WaitPlaced(60 * time.Second)
	return m
}

// waitRegistered waits until the leader knows every member's gRPC address,
// so the cluster is quiet: no registration is still in flight.
func (c *Cluster) waitRegistered(timeout time.Duration) {
	c.t.Helper()
	testutil.Eventually(c.t, timeout, func() error {
		leader := c.Leader()
		if leader < 0 {
			return fmt.Errorf("no leader")
		}
		members, err := c.Members[leader].Node.Members()
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.GRPCAddr == "" {
				return fmt.Errorf("%s has no registered gRPC address", m.ID)
			}
		}
		if len(members) != len(c.Members) {
			return fmt.Errorf("%d members, want %d", len(members), len(c.Members))
		}
		return nil
	})
}

func (c *Cluster) start(m *Member, bootstrap bool) {
	c.t.Helper()
	lis, err := net.Listen("tcp", m.GRPCAddr)
	if err != nil {
		c.t.Fatalf("listen for %s: %v", m.ID, err)
	}
	m.GRPCAddr = lis.Addr().String()
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.RaftAddr, cfg.GRPCAddr, cfg.Bootstrap = m.ID, m.Dir, m.RaftAddr, m.GRPCAddr, bootstrap
	FastConfig(&cfg)
	if m.GossipAddr != "" {
		cfg.GossipAddr = m.GossipAddr // a restart keeps its address
	}
	peerClient := server.NewPeerClient(nil)
	cfg.Prober = peerClient.Probe
	cfg.StatusFetcher = peerClient.Status
	cfg.Deliverer = peerClient.Deliver
	cfg.Copier = peerClient.Copy
	cfg.DigestProber = peerClient.DigestAt
	cfg.Fencer = peerClient.Fence
	cfg.MoveStepper = peerClient.MoveStep
	if c.tweak != nil {
		c.tweak(&cfg) // may wrap the Prober or the Deliverer
	}
	nd, err := node.Start(cfg)
	if err != nil {
		lis.Close()
		peerClient.Close()
		c.t.Fatalf("start %s: %v", m.ID, err)
	}
	m.peerClient = peerClient
	m.RaftAddr, m.GossipAddr = nd.Config().RaftAddr, nd.Config().GossipAddr
	m.Node = nd
	m.server = server.New(nd, cfg.Logger, c.serverOpts...)
	m.served = make(chan error, 1)
	go func() { m.served <- m.server.Serve(lis) }()
}

// Server is member i's gRPC server (nil while stopped).
func (c *Cluster) Server(i int) *server.Server { return c.Members[i].server }

// Stop shuts member i down (its data stays).
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	m := c.Members[i]
	if m.Node == nil {
		return
	}
	m.server.Stop()
	<-m.served
	if err := m.Node.Close(); err != nil {
		c.t.Errorf("close %s: %v", m.ID, err)
	}
	m.peerClient.Close()
	m.Node, m.server, m.peerClient = nil, nil, nil
}

// Kill stops member i abruptly: Raft goes down first, failing the writes in
// flight (their outcome is unknown to the clients), then the server drops its
// connections.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	m := c.Members[i]
	if m.Node == nil {
		return
	}
	if err := m.Node.Close(); err != nil {
		c.t.Errorf("close %s: %v", m.ID, err)
	}
	m.server.Kill()
	<-m.served
	m.peerClient.Close()
	m.Node, m.server, m.peerClient = nil, nil, nil
}

// Rejoin starts a stopped member again on its addresses with a fresh,
// empty data dir and joins it to the cluster (a removed node coming back).
func (c *Cluster) Rejoin(i int) {
	c.t.Helper()
	m := c.Members[i]
	m.Dir = c.t.TempDir()
	c.start(m, false)
	c.join(m)
	c.waitRegistered(10 * time.Second)
}

// Restart starts a stopped member again on its addresses and data.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.start(c.Members[i], false)
}

// StopAll stops every running member.
func (c *Cluster) StopAll() {
	for i := range c.Members {
		c.Stop(i)
	}
}

// Addrs lists the gRPC address of every member that has started.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, m := range c.Members {
		if strings.HasSuffix(m.GRPCAddr, ":0") {
			continue // not started yet: no port to dial
		}
		out = append(out, m.GRPCAddr)
	}
	return out
}

// Client returns a client over all members, closed when the test ends.
func (c *Cluster) Client() *client.Client {
	c.t.Helper()
	return c.ClientWith(client.Options{AttemptTimeout: 2 * time.Second})
}

// ClientWith returns a client with opts over all members, closed when the
// test ends.
func (c *Cluster) ClientWith(opts client.Options) *client.Client {
	c.t.Helper()
	cl, err := client.New(c.Addrs(), opts)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// Leader returns the index of the running member that leads the meta
// group, or -1.
func (c *Cluster) Leader() int {
	for i, m := range c.Members {
		if m.Node != nil && m.Node.IsLeader() {
			return i
		}
	}
	return -1
}

// WaitLeader waits until some running member leads and returns its index.
func (c *Cluster) WaitLeader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	testutil.Eventually(c.t, timeout, func() error {
		if leader = c.Leader(); leader < 0 {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	return leader
}

// WaitConverged waits until, for every group, the running members that host
// it have applied the same index and hold the same state digest.
func (c *Cluster) WaitConverged(timeout time.Duration) {
	c.t.Helper()
	testutil.Eventually(c.t, timeout, func() error {
		first := map[shard.GroupID]node.GroupState{}
		firstBy := map[shard.GroupID]string{}
		for _, m := range c.Members {
			if m.Node == nil {
				continue
			}
			states, err := m.Node.States()
			if err != nil {
				return err
			}
			for id, st := range states {
				ref, ok := first[id]
				if !ok {
					first[id], firstBy[id] = st, m.ID
					continue
				}
				if st != ref {
					return fmt.Errorf("group %d: %s at index %d differs from %s at %d", id, m.ID, st.Applied, firstBy[id], ref.Applied)
				}
			}
		}
		return nil
	})
}

// GroupLeaders maps each data group to the index of the running member
// leading it.
func (c *Cluster) GroupLeaders() map[shard.GroupID]int {
	out := map[shard.GroupID]int{}
	for i, m := range c.Members {
		if m.Node == nil {
			continue
		}
		for _, g := range m.Node.Groups() {
			if g.IsLeader() {
				out[g.ID()] = i
			}
		}
	}
	return out
}

// WaitGroupLeader waits until a running member leads a data group and
// returns its index.
func (c *Cluster) WaitGroupLeader(id shard.GroupID, timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	testutil.Eventually(c.t, timeout, func() error {
		var ok bool
		if leader, ok = c.GroupLeaders()[id]; !ok {
			return fmt.Errorf("group %d has no leader", id)
		}
		return nil
	})
	return leader
}

// WaitPlaced waits until every data group of the shard map has a leader, as
// many voters as the map lists replicas, knows its slot ranges and runs at
// the cluster's active version, on every running member's view: the
// cluster is quiet, its groups done with the commands a new leader makes.
func (c *Cluster) WaitPlaced(timeout time.Duration) {
	c.t.Helper()
	testutil.Eventually(c.t, timeout, func() error {
		for _, m := range c.Members {
			if m.Node == nil {
				continue
			}
			smap := m.Node.ShardMap()
			if smap == nil {
				return fmt.Errorf("%s has no shard map", m.ID)
			}
			for _, sg := range smap.Groups {
				if !slices.Contains(sg.Replicas, m.ID) {
					continue
				}
				g := m.Node.Group(sg.ID)
				if g == nil {
					return fmt.Errorf("%s has not opened group %d", m.ID, sg.ID)
				}
				members, err := g.Members()
				if err != nil {
					return err
				}
				voters := 0
				for _, mb := range members {
					if mb.Voter {
						voters++
					}
				}
				if voters != len(sg.Replicas) || len(members) != len(sg.Replicas) {
					return fmt.Errorf("%s: group %d has %d voters of %d members, map says %v", m.ID, sg.ID, voters, len(members), sg.Replicas)
				}
				if lid, _ := g.Leader(); lid == "" {
					return fmt.Errorf("%s: group %d has no leader", m.ID, sg.ID)
				}
				if ranges, _, ok, err := g.OwnedRanges(); err != nil || !ok || !slices.Equal(ranges, sg.Ranges) {
					return fmt.Errorf("%s: group %d has not been told its ranges yet", m.ID, sg.ID)
				}
			}
			if err := GroupsSettled(m.Node); err != nil {
				return fmt.Errorf("%s: %w", m.ID, err)
			}
		}
		return nil
	})
}

// GroupsSettled is nil once every group n hosts has a leader and runs at
// the cluster's active version: done with the commands a new leader makes
// on its own (a test that compares states before and after a call must
// not blame the call for them).
func GroupsSettled(n *node.Node) error {
	active, err := n.ClusterVersion()
	if err != nil || !active.Stored {
		return fmt.Errorf("no active cluster version yet (%v)", err)
	}
	for _, g := range n.Groups() {
		if lid, _ := g.Leader(); lid == "" {
			return fmt.Errorf("group %d has no leader", g.ID())
		}
		if cv, err := g.ClusterVersion(); err != nil || cv.Version < active.Version {
			return fmt.Errorf("group %d runs at cluster version %d, the active one is %d (%v)", g.ID(), cv.Version, active.Version, err)
		}
	}
	return nil
}

// logOut is where members log: nowhere, unless SYNCSTORE_TEST_LOG=1.
func logOut() io.Writer {
	if os.Getenv("SYNCSTORE_TEST_LOG") == "1" {
		return os.Stderr
	}
	return io.Discard
}
