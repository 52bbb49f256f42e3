package server

import (
	"context"

	"google.golang.org/grpc"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// ListNodes returns the node registry as this node's meta replica holds it.
func (s *Server) ListNodes(ctx context.Context, _ *syncv1.ListNodesRequest) (*syncv1.ListNodesResponse, error) {
	nodes, err := s.node.NodeRecords()
	if err != nil {
		return nil, toStatus(err)
	}
	leader, _ := s.node.Leader()
	out := &syncv1.ListNodesResponse{ServedBy: s.node.ID(), LeaderId: leader}
	for _, nd := range nodes {
		out.Nodes = append(out.Nodes, &syncv1.NodeInfo{
			NodeId: nd.ID, RaftAddr: nd.RaftAddr, GrpcAddr: nd.GRPCAddr, GossipAddr: nd.GossipAddr,
			State: nd.State.String(), Dead: nd.Dead, StateSinceMs: nd.StateSinceMs,
		})
	}
	return out, nil
}

// RemoveNode starts decommissioning a node, on the meta leader (forwarded
// there once).
func (s *Server) RemoveNode(ctx context.Context, req *syncv1.RemoveNodeRequest) (*syncv1.RemoveNodeResponse, error) {
	if err := fsm.ValidateNodeID(req.GetNodeId()); err != nil {
		return nil, toStatus(err)
	}
	nd, already, err := s.node.RemoveNode(ctx, req.GetNodeId(), req.GetDead())
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.RemoveNodeResponse, error) {
			return syncv1.NewAdminClient(conn).RemoveNode(ctx, req)
		})
	}
	return &syncv1.RemoveNodeResponse{State: nd.State.String(), Dead: nd.Dead, Already: already}, nil
}

// TransferLeader pins a node first among a group's replicas, on the meta
// leader (forwarded there once).
func (s *Server) TransferLeader(ctx context.Context, req *syncv1.TransferLeaderRequest) (*syncv1.ShardChangeResponse, error) {
	g, version, changed, err := s.node.TransferLeader(ctx, shard.GroupID(req.GetGroupId()), req.GetTo())
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.ShardChangeResponse, error) {
			return syncv1.NewAdminClient(conn).TransferLeader(ctx, req)
		})
	}
	return &syncv1.ShardChangeResponse{MapVersion: version, Replicas: g.Replicas, Changed: changed}, nil
}

// MoveReplica replaces one replica of a group in the shard map, on the meta
// leader (forwarded there once).
func (s *Server) MoveReplica(ctx context.Context, req *syncv1.MoveReplicaRequest) (*syncv1.ShardChangeResponse, error) {
	g, version, changed, err := s.node.MoveReplica(ctx, shard.GroupID(req.GetGroupId()), req.GetFrom(), req.GetTo())
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.ShardChangeResponse, error) {
			return syncv1.NewAdminClient(conn).MoveReplica(ctx, req)
		})
	}
	return &syncv1.ShardChangeResponse{MapVersion: version, Replicas: g.Replicas, Changed: changed}, nil
}

// Status is a node.StatusFetcher: the status of the node at addr, each of
// its groups with the Raft configuration it sees.
func (p *PeerClient) Status(ctx context.Context, addr string) (node.Status, error) {
	conn, err := p.peers.conn(addr)
	if err != nil {
		return node.Status{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, peerCallTimeout)
	defer cancel()
	st, err := syncv1.NewAdminClient(conn).NodeStatus(ctx, &syncv1.NodeStatusRequest{})
	if err != nil {
		return node.Status{}, err
	}
	out := node.Status{ID: st.GetNodeId(), RaftAddr: st.GetRaftAddr(), GRPCAddr: st.GetGrpcAddr(), ShardMapVersion: st.GetShardMapVersion(),
		BinaryVersion: st.GetBinaryVersion(), SupportedClusterVersion: st.GetSupportedClusterVersion()}
	for _, g := range st.GetGroups() {
		gs := node.GroupStatus{
			ID: g.GetGroupId(), State: g.GetState(), LeaderID: g.GetLeaderId(), Term: g.GetTerm(),
			CommitIndex: g.GetCommitIndex(), AppliedIndex: g.GetAppliedIndex(), LastLogIndex: g.GetLastLogIndex(), Fenced: g.GetFenced(),
		}
		for _, m := range g.GetMembers() {
			gs.Members = append(gs.Members, node.Member{ID: m.GetNodeId(), RaftAddr: m.GetRaftAddr(), GRPCAddr: m.GetGrpcAddr(), Voter: m.GetSuffrage() == "Voter"})
		}
		out.Groups = append(out.Groups, gs)
	}
	return out, nil
}
