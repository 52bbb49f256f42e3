package server

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// NodeStatus describes this node.
func (s *Server) NodeStatus(ctx context.Context, _ *syncv1.NodeStatusRequest) (*syncv1.NodeStatusResponse, error) {
	if s.node.Draining() {
		// Peers probe NodeStatus before handing leadership over: a node
		// that is stopping must not get any.
		return nil, status.Error(codes.Unavailable, "node is draining: it is shutting down")
	}
	st, err := s.node.Status()
	if err != nil {
		return nil, toStatus(err)
	}
	return nodeStatusProto(st), nil
}

// ClusterStatus gathers every member's status, in parallel, each bounded by
// peerCallTimeout.
func (s *Server) ClusterStatus(ctx context.Context, _ *syncv1.ClusterStatusRequest) (*syncv1.ClusterStatusResponse, error) {
	self, err := s.node.Status()
	if err != nil {
		return nil, toStatus(err)
	}
	// This node is listed even when it is in no meta configuration (not
	// joined yet): the caller then sees who answered and that it has no
	// cluster, rather than an empty one.
	out := &syncv1.ClusterStatusResponse{LeaderId: self.Meta.LeaderID, Unreachable: map[string]string{}, ServedBy: self.ID,
		Nodes: []*syncv1.NodeStatusResponse{nodeStatusProto(self)}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range self.Meta.Members {
		if m.ID == self.ID {
			continue
		}
		if m.GRPCAddr == "" {
			out.Unreachable[m.ID] = "no gRPC address registered"
			continue
		}
		wg.Add(1)
		go func(m node.Member) {
			defer wg.Done()
			st, err := s.peerStatus(ctx, m.GRPCAddr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out.Unreachable[m.ID] = err.Error()
				return
			}
			out.Nodes = append(out.Nodes, st)
		}(m)
	}
	wg.Wait()
	return out, nil
}

func (s *Server) peerStatus(ctx context.Context, addr string) (*syncv1.NodeStatusResponse, error) {
	conn, err := s.peers.conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, peerCallTimeout)
	defer cancel()
	return syncv1.NewAdminClient(conn).NodeStatus(ctx, &syncv1.NodeStatusRequest{})
}

func nodeStatusProto(st node.Status) *syncv1.NodeStatusResponse {
	out := &syncv1.NodeStatusResponse{
		NodeId:          st.ID,
		ClusterId:       st.ClusterID,
		RaftAddr:        st.RaftAddr,
		GrpcAddr:        st.GRPCAddr,
		State:           st.Meta.State,
		LeaderId:        st.Meta.LeaderID,
		Term:            st.Meta.Term,
		CommitIndex:     st.Meta.CommitIndex,
		AppliedIndex:    st.Meta.AppliedIndex,
		LastLogIndex:    st.Meta.LastLogIndex,
		Members:         membersProto(st.Meta.Members),
		ShardMapVersion: st.ShardMapVersion,
		BinaryVersion:   st.BinaryVersion,
		// Versions of this binary and of the cluster (rolling upgrades).
		SupportedClusterVersion:   st.SupportedClusterVersion,
		ActiveClusterVersion:      st.Active.Version,
		ActiveClusterVersionSetMs: st.Active.SetAtMs,
		Storage: &syncv1.StorageStatus{
			FreeBytes:    st.Storage.FreeBytes,
			ReserveBytes: st.Storage.ReserveBytes,
			LowSpace:     st.Storage.Low,
			Stalled:      st.Storage.Stalled,
			Rebuilt:      st.Storage.Rebuilt,
		},
	}
	for _, m := range st.Gossip {
		gm := &syncv1.GossipMember{NodeId: m.ID, Health: m.Health, GrpcAddr: m.GRPCAddr, RaftAddr: m.RaftAddr}
		for _, g := range m.Leads {
			gm.Leads = append(gm.Leads, uint64(g))
		}
		for _, g := range m.Hosts {
			gm.Hosts = append(gm.Hosts, uint64(g))
		}
		out.Gossip = append(out.Gossip, gm)
	}
	for _, g := range st.Groups {
		out.Groups = append(out.Groups, &syncv1.GroupStatus{
			GroupId:      g.ID,
			State:        g.State,
			LeaderId:     g.LeaderID,
			Term:         g.Term,
			CommitIndex:  g.CommitIndex,
			AppliedIndex: g.AppliedIndex,
			LastLogIndex: g.LastLogIndex,
			Members:      membersProto(g.Members),
			Fenced:       g.Fenced,
		})
	}
	return out
}

func membersProto(ms []node.Member) []*syncv1.Member {
	out := make([]*syncv1.Member, 0, len(ms))
	for _, m := range ms {
		suffrage := "Nonvoter"
		if m.Voter {
			suffrage = "Voter"
		}
		out = append(out, &syncv1.Member{NodeId: m.ID, RaftAddr: m.RaftAddr, GrpcAddr: m.GRPCAddr, Suffrage: suffrage})
	}
	return out
}

// ShardMap returns this node's shard map with the addresses of its nodes.
func (s *Server) ShardMap(ctx context.Context, _ *syncv1.ShardMapRequest) (*syncv1.ShardMapResponse, error) {
	m := s.node.ShardMap()
	if m == nil {
		return &syncv1.ShardMapResponse{}, nil
	}
	out := &syncv1.ShardMapResponse{Version: m.Version, NodeAddrs: map[string]string{}}
	for _, g := range m.Groups {
		info := &syncv1.ShardGroupInfo{Id: uint64(g.ID), Replicas: g.Replicas, Pinned: g.Pinned}
		for _, r := range g.Ranges {
			info.Ranges = append(info.Ranges, &syncv1.SlotRange{Start: r.Start, End: r.End})
		}
		out.Groups = append(out.Groups, info)
		for _, id := range g.Replicas {
			if addr := s.node.GRPCAddrOf(id); addr != "" {
				out.NodeAddrs[id] = addr
			}
		}
	}
	return out, nil
}

// Digests hashes every replica on this node.
func (s *Server) Digests(ctx context.Context, _ *syncv1.DigestsRequest) (*syncv1.DigestsResponse, error) {
	states, err := s.node.States()
	if err != nil {
		return nil, toStatus(err)
	}
	out := &syncv1.DigestsResponse{Digests: map[uint64]string{}, Applied: map[uint64]uint64{}, DeliveriesPending: map[uint64]bool{}}
	for id, st := range states {
		out.Digests[uint64(id)] = st.Digest
		out.Applied[uint64(id)] = st.Applied
		out.DeliveriesPending[uint64(id)] = st.DeliveriesPending
	}
	return out, nil
}
