package node

import (
	"context"
	"fmt"
	"slices"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/storage"
)

// Member is a server of a group's Raft configuration with its registered
// gRPC address (empty until the node has registered).
type Member struct {
	ID       string
	RaftAddr string
	GRPCAddr string
	Voter    bool
}

// configuration returns the group's current Raft configuration and its index.
func (g *Group) configuration() (raft.Configuration, uint64, error) {
	cf := g.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return raft.Configuration{}, 0, fmt.Errorf("node: group %d raft configuration: %w", g.id, err)
	}
	return cf.Configuration(), cf.Index(), nil
}

// Members lists the group's Raft configuration as this replica sees it.
func (g *Group) Members() ([]Member, error) {
	cf, _, err := g.configuration()
	if err != nil {
		return nil, err
	}
	var out []Member
	for _, s := range cf.Servers {
		out = append(out, Member{
			ID:       string(s.ID),
			RaftAddr: string(s.Address),
			GRPCAddr: g.node.grpcAddrOf(string(s.ID)),
			Voter:    s.Suffrage == raft.Voter,
		})
	}
	return out, nil
}

// addNonvoter adds a server as a non-voter unless it is in the configuration
// already at that address. prevIndex makes the change fail if the
// configuration moved meanwhile: one membership change at a time.
func (g *Group) addNonvoter(ctx context.Context, id, raftAddr string) error {
	cf, idx, err := g.configuration()
	if err != nil {
		return err
	}
	for _, s := range cf.Servers {
		if string(s.ID) == id && string(s.Address) == raftAddr {
			return nil
		}
	}
	ctx, cancel := g.withDefaultTimeout(ctx)
	defer cancel()
	if err := g.await(ctx, func() raft.Future {
		return g.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), idx, timeUntil(ctx))
	}); err != nil {
		return fmt.Errorf("node: group %d: add non-voter %s: %w", g.id, id, g.classifyApplyError(err))
	}
	g.log.Info("added non-voter", "id", id, "raft_addr", raftAddr)
	return nil
}

// promote makes a non-voter a voter.
func (g *Group) promote(ctx context.Context, id, raftAddr string) error {
	_, idx, err := g.configuration()
	if err != nil {
		return err
	}
	ctx, cancel := g.withDefaultTimeout(ctx)
	defer cancel()
	if err := g.await(ctx, func() raft.Future {
		return g.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), idx, timeUntil(ctx))
	}); err != nil {
		return fmt.Errorf("node: group %d: promote %s: %w", g.id, id, g.classifyApplyError(err))
	}
	g.log.Info("promoted to voter", "id", id)
	return nil
}

// removeServer takes a server out of the group.
func (g *Group) removeServer(ctx context.Context, id string) error {
	_, idx, err := g.configuration()
	if err != nil {
		return err
	}
	ctx, cancel := g.withDefaultTimeout(ctx)
	defer cancel()
	if err := g.await(ctx, func() raft.Future { return g.raft.RemoveServer(raft.ServerID(id), idx, timeUntil(ctx)) }); err != nil {
		return fmt.Errorf("node: group %d: remove %s: %w", g.id, id, g.classifyApplyError(err))
	}
	g.log.Info("removed server", "id", id)
	return nil
}

// CheckJoin refuses, on the meta leader, a join that clashes with a node
// the cluster knows: its id at other addresses (an operator reusing an id
// would re-point a live member and cut its groups off), or another id at
// its Raft or gRPC address (one process would count as two servers in a
// vote). The same id at the same addresses is a retry and passes.
func (n *Node) CheckJoin(nd fsm.Node) error {
	meta := n.meta
	if !meta.IsLeader() {
		return meta.notLeader()
	}
	nodes, err := meta.fsm.Nodes()
	if err != nil {
		return err
	}
	for _, o := range nodes {
		if o.State == fsm.NodeRemoved {
			continue // its id and addresses are free: a fresh data dir may rejoin
		}
		// The registry's own rule first; a join, unlike a restart, must
		// also match or avoid the gRPC address.
		if err := fsm.RaftIdentityConflict(o, nd); err != nil {
			return fmt.Errorf("%w; a node that lost its data comes back under a new id and new addresses", err)
		}
		switch {
		case o.ID == nd.ID && o.GRPCAddr != nd.GRPCAddr:
			return fmt.Errorf("%w: node %s is registered at gRPC address %s, not %s", fsm.ErrNodeConflict, o.ID, o.GRPCAddr, nd.GRPCAddr)
		case o.ID != nd.ID && o.GRPCAddr == nd.GRPCAddr:
			return fmt.Errorf("%w: gRPC address %s belongs to node %s", fsm.ErrNodeConflict, nd.GRPCAddr, o.ID)
		}
	}
	cf, _, err := meta.configuration()
	if err != nil {
		return err
	}
	for _, s := range cf.Servers {
		id, addr := string(s.ID), string(s.Address)
		if (id == nd.ID) != (addr == nd.RaftAddr) {
			return fmt.Errorf("%w: the meta group has %s at raft address %s", fsm.ErrNodeConflict, id, addr)
		}
	}
	return nil
}

// AddLearner is the first step of a join, on the meta leader: it registers
// the node's addresses and adds it to the meta group as a non-voter, so it
// can catch up without counting toward the quorum. It returns the commit
// index the node must reach before Promote, and whether it is a voter
// already (a rejoin after restart).
func (n *Node) AddLearner(ctx context.Context, nd fsm.Node) (catchUpIndex uint64, voter bool, err error) {
	meta := n.meta
	if !meta.IsLeader() {
		return 0, false, meta.notLeader()
	}
	registered, err := meta.fsm.Nodes()
	if err != nil {
		return 0, false, err
	}
	// A retried join proposes nothing; a removed node joining again
	// registers again (and is active).
	if !slices.ContainsFunc(registered, func(o fsm.Node) bool { return o.SameAddrs(nd) && o.State != fsm.NodeRemoved }) {
		if err := n.register(ctx, nd); err != nil {
			return 0, false, fmt.Errorf("node: register %s: %w", nd.ID, err)
		}
	}
	cf, _, err := meta.configuration()
	if err != nil {
		return 0, false, err
	}
	for _, s := range cf.Servers {
		if string(s.ID) == nd.ID && string(s.Address) == nd.RaftAddr {
			return meta.raft.CommitIndex(), s.Suffrage == raft.Voter, nil
		}
	}
	if err := meta.addNonvoter(ctx, nd.ID, nd.RaftAddr); err != nil {
		return 0, false, err
	}
	return meta.raft.CommitIndex(), false, nil
}

// Promote makes a caught-up member of the meta group a voter, while the meta
// group has fewer than MaxMetaVoters voters; past that it stays a follower
// that does not vote.
func (n *Node) Promote(ctx context.Context, id, raftAddr string) error {
	meta := n.meta
	if !meta.IsLeader() {
		return meta.notLeader()
	}
	cf, _, err := meta.configuration()
	if err != nil {
		return err
	}
	voters := 0
	for _, s := range cf.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters >= MaxMetaVoters {
		return nil
	}
	return meta.promote(ctx, id, raftAddr)
}

// GroupStatus describes one group as a replica sees it.
type GroupStatus struct {
	ID          uint64
	State       string
	LeaderID    string
	Term        uint64
	CommitIndex uint64
	// AppliedIndex is Raft's: the last log entry handed to the state machine
	// (no-op and barrier entries included, unlike the state machine's own).
	AppliedIndex uint64
	LastLogIndex uint64
	Members      []Member
	// Fenced says why the replica is fenced ("" when it is not).
	Fenced string
}

// Status describes this node: its addresses, the meta group and every data
// group it hosts.
type Status struct {
	ID              string
	ClusterID       string // "" before the node knows its cluster
	RaftAddr        string
	GRPCAddr        string
	ShardMapVersion uint64
	Meta            GroupStatus
	Groups          []GroupStatus
	Gossip          []GossipMember
	Storage         StorageStatus
	// BinaryVersion and SupportedClusterVersion describe this node's
	// binary; Active is the cluster's version as its meta replica has it.
	// A binary older than cluster versions reports 0 for both numbers.
	BinaryVersion           string
	SupportedClusterVersion uint32
	Active                  fsm.ClusterVersion
}

// StorageStatus is the node's storage engine as it stands.
type StorageStatus struct {
	storage.Space
	// Rebuilt says why the state was set aside at start ("" when it was
	// not).
	Rebuilt string
}

// Status reports this node's view.
func (n *Node) Status() (Status, error) {
	meta, err := n.meta.status()
	if err != nil {
		return Status{}, err
	}
	st := Status{ID: n.cfg.NodeID, ClusterID: n.ClusterID(), RaftAddr: n.cfg.RaftAddr, GRPCAddr: n.cfg.GRPCAddr, Meta: meta, Gossip: n.gossip.Members(),
		Storage:       StorageStatus{Space: n.storage.Space(), Rebuilt: n.storage.Rebuilt()},
		BinaryVersion: BinaryVersion(), SupportedClusterVersion: fsm.SupportedClusterVersion()}
	if st.Active, err = n.meta.fsm.ClusterVersion(); err != nil {
		return Status{}, err
	}
	if m := n.shardMap(); m != nil {
		st.ShardMapVersion = m.Version
	}
	for _, g := range n.groupsSnapshot() {
		gs, err := g.status()
		if err != nil {
			return Status{}, err
		}
		st.Groups = append(st.Groups, gs)
	}
	return st, nil
}

func (g *Group) status() (GroupStatus, error) {
	members, err := g.Members()
	if err != nil {
		return GroupStatus{}, err
	}
	_, lid := g.raft.LeaderWithID()
	return GroupStatus{
		ID:           uint64(g.id),
		State:        g.raft.State().String(),
		LeaderID:     string(lid),
		Term:         g.raft.CurrentTerm(),
		CommitIndex:  g.raft.CommitIndex(),
		AppliedIndex: g.raft.AppliedIndex(),
		LastLogIndex: g.raft.LastIndex(),
		Members:      members,
		Fenced:       g.Fenced(),
	}, nil
}
