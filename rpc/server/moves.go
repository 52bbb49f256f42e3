package server

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// Move runs a slot-move step at this node's replica of the group, or
// forwards it once to the group's leader.
func (s *Server) Move(ctx context.Context, req *syncv1.MoveRequest) (*syncv1.MoveResponse, error) {
	var step fsmpb.MoveStep
	if err := proto.Unmarshal(req.GetStep(), &step); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "move step does not decode: %v", err)
	}
	res, err := s.node.MoveStep(ctx, shard.GroupID(req.GetGroupId()), &step)
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.MoveResponse, error) {
			return syncv1.NewPeerClient(conn).Move(ctx, req)
		})
	}
	out, err := proto.Marshal(res)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode move step result: %v", err)
	}
	return &syncv1.MoveResponse{Result: out}, nil
}

// MoveStep is a node.MoveStepper: it runs a move step at the node at addr,
// which runs it if it leads the group or forwards it once.
func (p *PeerClient) MoveStep(ctx context.Context, addr string, group shard.GroupID, step *fsmpb.MoveStep) (*fsmpb.MoveStepResult, error) {
	conn, err := p.peers.conn(addr)
	if err != nil {
		return nil, err
	}
	b, err := proto.Marshal(step)
	if err != nil {
		return nil, fmt.Errorf("encode move step: %w", err)
	}
	resp, err := syncv1.NewPeerClient(conn).Move(ctx, &syncv1.MoveRequest{GroupId: uint64(group), Step: b})
	if err != nil {
		return nil, fmt.Errorf("move step for group %d at %s: %w", group, addr, err)
	}
	var res fsmpb.MoveStepResult
	if err := proto.Unmarshal(resp.GetResult(), &res); err != nil {
		return nil, fmt.Errorf("decode move step result from %s: %w", addr, err)
	}
	return &res, nil
}

// MoveSlots plans a move at the meta leader.
func (s *Server) MoveSlots(ctx context.Context, req *syncv1.MoveSlotsRequest) (*syncv1.MoveSlotsResponse, error) {
	ranges := make([]shard.Range, 0, len(req.GetRanges()))
	for _, r := range req.GetRanges() {
		ranges = append(ranges, shard.Range{Start: r.GetStart(), End: r.GetEnd()})
	}
	id, err := s.node.PlanMove(ctx, ranges, shard.GroupID(req.GetTargetGroup()), req.GetReason())
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.MoveSlotsResponse, error) {
			return syncv1.NewAdminClient(conn).MoveSlots(ctx, req)
		})
	}
	return &syncv1.MoveSlotsResponse{MoveId: id}, nil
}

// AbortMove asks the meta leader to stop a move.
func (s *Server) AbortMove(ctx context.Context, req *syncv1.AbortMoveRequest) (*syncv1.AbortMoveResponse, error) {
	if err := s.node.AbortMove(ctx, req.GetMoveId()); err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.AbortMoveResponse, error) {
			return syncv1.NewAdminClient(conn).AbortMove(ctx, req)
		})
	}
	return &syncv1.AbortMoveResponse{}, nil
}

// ListMoves lists the moves this node's meta replica knows.
func (s *Server) ListMoves(ctx context.Context, _ *syncv1.ListMovesRequest) (*syncv1.ListMovesResponse, error) {
	recs, err := s.node.Moves()
	if err != nil {
		return nil, toStatus(err)
	}
	out := &syncv1.ListMovesResponse{}
	for _, r := range recs {
		mi := &syncv1.MoveInfo{
			Id: r.GetId(), SourceGroup: r.GetSource(), TargetGroup: r.GetTarget(), Phase: fsm.PhaseName(r.GetPhase()),
			CreatedMs: r.GetCreatedMs(), UpdatedMs: r.GetUpdatedMs(), Records: r.GetRecords(), Bytes: r.GetBytes(),
			Note: r.GetNote(), AbortRequested: r.GetAbortRequested(), FencedMs: r.GetFencedMs(), SwitchedMs: r.GetSwitchedMs(),
			Resumes: r.GetResumes(), Reason: r.GetReason(),
		}
		for _, sr := range r.GetRanges() {
			mi.Ranges = append(mi.Ranges, &syncv1.SlotRange{Start: sr.GetStart(), End: sr.GetEnd()})
		}
		out.Moves = append(out.Moves, mi)
	}
	return out, nil
}

// AddGroups creates groups at the meta leader and evens the slots out.
func (s *Server) AddGroups(ctx context.Context, req *syncv1.AddGroupsRequest) (*syncv1.AddGroupsResponse, error) {
	if req.GetCount() == 0 || req.GetCount() > node.MaxAddGroups {
		return nil, status.Errorf(codes.InvalidArgument, "add %d groups: want 1..%d at a time", req.GetCount(), node.MaxAddGroups)
	}
	ids, err := s.node.AddGroups(ctx, int(req.GetCount()))
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.AddGroupsResponse, error) {
			return syncv1.NewAdminClient(conn).AddGroups(ctx, req)
		})
	}
	out := &syncv1.AddGroupsResponse{}
	for _, id := range ids {
		out.GroupIds = append(out.GroupIds, uint64(id))
	}
	if out.MoveIds, err = s.node.RebalanceSlots(ctx, fmt.Sprintf("%d groups added", len(ids))); err != nil {
		// gRPC drops the answer of a failed call: say what was done.
		return nil, toStatus(fmt.Errorf("created groups %v and planned moves %v, then: %w", out.GroupIds, out.MoveIds, err))
	}
	return out, nil
}

// SplitGroup splits a group at the meta leader.
func (s *Server) SplitGroup(ctx context.Context, req *syncv1.SplitGroupRequest) (*syncv1.SplitGroupResponse, error) {
	id, moves, err := s.node.SplitGroup(ctx, shard.GroupID(req.GetGroupId()))
	if err != nil && id == 0 {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.SplitGroupResponse, error) {
			return syncv1.NewAdminClient(conn).SplitGroup(ctx, req)
		})
	}
	if err != nil {
		return nil, toStatus(fmt.Errorf("created group %d and planned moves %v, then: %w", id, moves, err))
	}
	return &syncv1.SplitGroupResponse{GroupId: uint64(id), MoveIds: moves}, nil
}

// RebalanceSlots evens the slots out at the meta leader.
func (s *Server) RebalanceSlots(ctx context.Context, req *syncv1.RebalanceSlotsRequest) (*syncv1.RebalanceSlotsResponse, error) {
	moves, err := s.node.RebalanceSlots(ctx, "rebalance")
	if err != nil && len(moves) == 0 {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.RebalanceSlotsResponse, error) {
			return syncv1.NewAdminClient(conn).RebalanceSlots(ctx, req)
		})
	}
	if err != nil {
		return nil, toStatus(fmt.Errorf("planned moves %v, then: %w", moves, err))
	}
	return &syncv1.RebalanceSlotsResponse{MoveIds: moves}, nil
}
