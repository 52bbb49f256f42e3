package node

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm"
)

// Member is a server of the Raft configuration with its registered gRPC
// address (empty until the node has registered).
type Member struct {
	ID       string
	RaftAddr string
	GRPCAddr string
	Voter    bool
}

// Members lists the Raft configuration as this node sees it.
func (n *Node) Members() ([]Member, error) {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, fmt.Errorf("node: raft configuration: %w", err)
	}
	nodes, err := n.fsm.Nodes()
	if err != nil {
		return nil, err
	}
	grpcAddr := make(map[string]string, len(nodes))
	for _, nd := range nodes {
		grpcAddr[nd.ID] = nd.GRPCAddr
	}
	var out []Member
	for _, s := range cf.Configuration().Servers {
		out = append(out, Member{
			ID:       string(s.ID),
			RaftAddr: string(s.Address),
			GRPCAddr: grpcAddr[string(s.ID)],
			Voter:    s.Suffrage == raft.Voter,
		})
	}
	return out, nil
}

// AddLearner is the first step of a join, on the leader: it registers the
// node's addresses and adds it to the Raft configuration as a non-voter, so
// it can catch up without counting toward the quorum. It returns the commit
// index the node must reach before Promote. A node already in the
// configuration at the same address is left as it is (a rejoin after restart).
func (n *Node) AddLearner(ctx context.Context, nd fsm.Node) (catchUpIndex uint64, voter bool, err error) {
	if !n.IsLeader() {
		return 0, false, n.notLeader()
	}
	if err := n.register(ctx, nd); err != nil {
		return 0, false, fmt.Errorf("node: register %s: %w", nd.ID, err)
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return 0, false, fmt.Errorf("node: raft configuration: %w", err)
	}
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == nd.ID && string(s.Address) == nd.RaftAddr {
			return n.raft.CommitIndex(), s.Suffrage == raft.Voter, nil
		}
	}
	ctx, cancel := n.withDefaultTimeout(ctx)
	defer cancel()
	// prevIndex makes the change fail if the configuration moved meanwhile:
	// one membership change at a time.
	f := n.raft.AddNonvoter(raft.ServerID(nd.ID), raft.ServerAddress(nd.RaftAddr), cf.Index(), timeUntil(ctx))
	if err := waitFuture(ctx, f); err != nil {
		return 0, false, fmt.Errorf("node: add non-voter %s: %w", nd.ID, n.classifyApplyError(err))
	}
	n.log.Info("added non-voter", "id", nd.ID, "raft_addr", nd.RaftAddr)
	return n.raft.CommitIndex(), false, nil
}

// Promote makes a caught-up non-voter a voter.
func (n *Node) Promote(ctx context.Context, id, raftAddr string) error {
	if !n.IsLeader() {
		return n.notLeader()
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("node: raft configuration: %w", err)
	}
	ctx, cancel := n.withDefaultTimeout(ctx)
	defer cancel()
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), cf.Index(), timeUntil(ctx))
	if err := waitFuture(ctx, f); err != nil {
		return fmt.Errorf("node: promote %s: %w", id, n.classifyApplyError(err))
	}
	n.log.Info("promoted to voter", "id", id)
	return nil
}

// Status describes this node's Raft view.
type Status struct {
	ID          string
	RaftAddr    string
	GRPCAddr    string
	State       string
	LeaderID    string
	Term        uint64
	CommitIndex uint64
	// AppliedIndex is Raft's: the last log entry handed to the state machine
	// (no-op and barrier entries included, unlike the state machine's own).
	AppliedIndex uint64
	LastLogIndex uint64
	Members      []Member
}

// Status reports this node's Raft view.
func (n *Node) Status() (Status, error) {
	members, err := n.Members()
	if err != nil {
		return Status{}, err
	}
	lid, _ := n.Leader()
	return Status{
		ID:           n.cfg.NodeID,
		RaftAddr:     n.cfg.RaftAddr,
		GRPCAddr:     n.cfg.GRPCAddr,
		State:        n.raft.State().String(),
		LeaderID:     lid,
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastLogIndex: n.raft.LastIndex(),
		Members:      members,
	}, nil
}

// Digest hashes this replica's state (see fsm.FSM.Digest).
func (n *Node) Digest() (string, error) { return n.fsm.Digest() }

// AppliedIndex is the state machine's applied index.
func (n *Node) AppliedIndex() uint64 { return n.fsm.AppliedIndex() }
