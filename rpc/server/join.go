package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/node/raftmux"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

const (
	// catchUpPoll is how often the leader asks a joining node how far it got.
	catchUpPoll = 100 * time.Millisecond
	// joinVerifyTimeout bounds the check that a joining node answers at the
	// addresses it gave: a Join of a node that does not exist is refused
	// this soon, instead of polluting the cluster or hanging.
	joinVerifyTimeout = 3 * time.Second
	// joinCatchUpTimeout bounds the wait for a verified node to apply the
	// meta log before it is promoted.
	joinCatchUpTimeout = 60 * time.Second
)

// Join adds a node: validated, refused if it is of another cluster,
// checked against the members the cluster knows, verified to answer with
// its id at both addresses (and, there too, to be of no other cluster),
// registered and added as a non-voter, then promoted to voter once it has
// applied the log up to the index it had to reach. Everything before the
// registration is checked first, so a refused Join changes nothing. The
// answer carries the cluster id, which the joined node records.
func (s *Server) Join(ctx context.Context, req *syncv1.JoinRequest) (*syncv1.JoinResponse, error) {
	nd := fsm.Node{ID: req.GetNodeId(), RaftAddr: req.GetRaftAddr(), GRPCAddr: req.GetGrpcAddr(), GossipAddr: req.GetGossipAddr()}
	if err := validateJoin(nd); err != nil {
		return nil, toStatus(err)
	}
	if req.GetClusterId() != "" {
		if err := fsm.ValidateClusterID(req.GetClusterId()); err != nil {
			return nil, toStatus(err)
		}
	}
	// Before anything else: a node of a restored cluster and one of its
	// original share ids and addresses, which would be refused below for
	// the wrong reason.
	if err := s.node.CheckJoinCluster(nd.ID, req.GetClusterId()); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "join %s refused: %v", nd.ID, err)
	}
	forward := func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.JoinResponse, error) {
		return syncv1.NewAdminClient(conn).Join(ctx, req)
	}
	if err := s.node.CheckJoin(nd); err != nil {
		return forwardOr(s, ctx, err, forward)
	}
	if err := verifyJoiner(ctx, nd, s.peers, s.node.CheckJoinCluster, s.node.CheckJoinVersion); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "join %s refused: %v", nd.ID, err)
	}
	target, voter, err := s.node.AddLearner(ctx, nd)
	if err != nil {
		return forwardOr(s, ctx, err, forward)
	}
	if !voter {
		cctx, cancel := context.WithTimeout(ctx, joinCatchUpTimeout)
		defer cancel()
		if err := s.awaitCatchUp(cctx, nd.GRPCAddr, target); err != nil {
			return nil, toStatus(fmt.Errorf("join %s: %w", nd.ID, err))
		}
		if err := s.node.Promote(ctx, nd.ID, nd.RaftAddr); err != nil {
			return nil, toStatus(err)
		}
	}
	return &syncv1.JoinResponse{LeaderId: s.node.ID(), ClusterId: s.node.ClusterID()}, nil
}

// validateJoin checks a Join's fields on whichever node receives it, before
// anything is forwarded or proposed.
func validateJoin(nd fsm.Node) error {
	if err := fsm.ValidateRegisterNode(&fsmpb.RegisterNode{NodeId: nd.ID, RaftAddr: nd.RaftAddr, GrpcAddr: nd.GRPCAddr, GossipAddr: nd.GossipAddr}); err != nil {
		return err
	}
	if nd.GRPCAddr == "" {
		return fmt.Errorf("%w: a joining node needs a gRPC address", fsm.ErrInvalidArgument)
	}
	return nil
}

// verifyJoiner dials the joining node at both addresses it gave and checks
// that it answers there with the id it claims, within joinVerifyTimeout,
// and that its status names no other cluster (checkCluster), whatever its
// request said, and a binary that supports the cluster's active version
// (checkVersion). The gRPC connection is not cached: a refused address must
// leave nothing behind.
func verifyJoiner(ctx context.Context, nd fsm.Node, p *peers, checkCluster func(nodeID, clusterID string) error, checkVersion func(nodeID string, supported uint32) error) error {
	ctx, cancel := context.WithTimeout(ctx, joinVerifyTimeout)
	defer cancel()
	conn, err := grpc.NewClient(nd.GRPCAddr, grpc.WithTransportCredentials(p.creds))
	if err != nil {
		return fmt.Errorf("gRPC address %s: %w", nd.GRPCAddr, err)
	}
	defer conn.Close()
	st, err := syncv1.NewAdminClient(conn).NodeStatus(ctx, &syncv1.NodeStatusRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("no syncstore node answered at gRPC address %s within %v: %v", nd.GRPCAddr, joinVerifyTimeout, errorMessage(err))
	}
	if st.GetNodeId() != nd.ID || st.GetRaftAddr() != nd.RaftAddr {
		return fmt.Errorf("the node at gRPC address %s is %s with raft address %s, not %s at %s", nd.GRPCAddr, st.GetNodeId(), st.GetRaftAddr(), nd.ID, nd.RaftAddr)
	}
	if err := checkCluster(nd.ID, st.GetClusterId()); err != nil {
		return err
	}
	if err := checkVersion(nd.ID, st.GetSupportedClusterVersion()); err != nil {
		return err
	}
	id, err := raftmux.ProbeIdentity(ctx, nd.RaftAddr, p.tls)
	if err != nil {
		return fmt.Errorf("raft address %s: %w", nd.RaftAddr, err)
	}
	if id != nd.ID {
		return fmt.Errorf("the node at raft address %s is %q, not %s", nd.RaftAddr, id, nd.ID)
	}
	return nil
}

// errorMessage is a status's message without the code prefix.
func errorMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

// awaitCatchUp polls a node until it has applied index target.
func (s *Server) awaitCatchUp(ctx context.Context, addr string, target uint64) error {
	conn, err := s.peers.conn(addr)
	if err != nil {
		return err
	}
	client := syncv1.NewAdminClient(conn)
	tick := time.NewTicker(catchUpPoll)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, peerCallTimeout)
		st, err := client.NodeStatus(cctx, &syncv1.NodeStatusRequest{})
		cancel()
		if err == nil && st.GetAppliedIndex() >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%w: %s did not apply index %d in time (last error %v)", node.ErrNotApplied, addr, target, err)
			}
			return fmt.Errorf("waiting for %s to apply index %d (last error %v): %w", addr, target, err, ctx.Err())
		case <-tick.C:
		}
	}
}
