package server

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// Append adds an entry through the leader.
func (s *Server) Append(ctx context.Context, req *syncv1.AppendRequest) (*syncv1.AppendResponse, error) {
	res, err := s.node.Append(ctx, node.AppendRequest{
		Timeline:       req.GetTimeline(),
		Payload:        req.GetPayload(),
		IdempotencyKey: req.GetIdempotencyKey(),
		Metadata:       req.GetMetadata(),
	})
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.AppendResponse, error) {
			return syncv1.NewSyncClient(conn).Append(ctx, req)
		})
	}
	return &syncv1.AppendResponse{Seq: res.Seq, TsMs: res.TsMs, Deduplicated: res.Deduplicated}, nil
}

// Pull reads a page of a timeline; linearizable pulls go to the leader.
func (s *Server) Pull(ctx context.Context, req *syncv1.PullRequest) (*syncv1.PullResponse, error) {
	res, err := s.node.Pull(ctx, req.GetTimeline(), req.GetAfterSeq(), int(req.GetLimit()), consistency(req.GetConsistency()))
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.PullResponse, error) {
			return syncv1.NewSyncClient(conn).Pull(ctx, req)
		})
	}
	out := &syncv1.PullResponse{
		Status:    pullStatus(res.Status),
		HeadSeq:   res.Head,
		OldestSeq: res.Oldest,
		Entries:   make([]*syncv1.Entry, len(res.Entries)),
	}
	for i, e := range res.Entries {
		out.Entries[i] = entryProto(e)
	}
	return out, nil
}

func entryProto(e fsm.Entry) *syncv1.Entry {
	return &syncv1.Entry{
		Timeline:        e.Timeline,
		Seq:             e.Seq,
		TsMs:            e.TsMs,
		Payload:         e.Payload,
		IdempotencyKey:  e.IdempotencyKey,
		Metadata:        e.Metadata,
		Sender:          e.Sender,
		Conversation:    e.Conversation,
		ConversationSeq: e.ConversationSeq,
		Light:           e.Light,
	}
}

// Head returns a timeline's newest seq; linearizable heads go to the leader.
func (s *Server) Head(ctx context.Context, req *syncv1.HeadRequest) (*syncv1.HeadResponse, error) {
	head, err := s.node.Head(ctx, req.GetTimeline(), consistency(req.GetConsistency()))
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.HeadResponse, error) {
			return syncv1.NewSyncClient(conn).Head(ctx, req)
		})
	}
	return &syncv1.HeadResponse{HeadSeq: head}, nil
}

// forwardOr forwards the request that failed with err to the leader when err
// says this node is not it (see leaderConn), else answers err.
func forwardOr[Resp any](s *Server, ctx context.Context, err error, call func(context.Context, *grpc.ClientConn) (Resp, error)) (Resp, error) {
	if fctx, conn, nl, ok := s.leaderConn(ctx, err); ok {
		resp, ferr := call(fctx, conn)
		return resp, forwardError(nl, ferr)
	}
	var zero Resp
	return zero, toStatus(err)
}

// forwardError passes the leader's answer through. An UNAVAILABLE without a
// NotLeader detail (the leader could not be reached) gets one naming the
// leader, so the client retries there directly.
func forwardError(nl *node.NotLeaderError, err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || len(st.Details()) > 0 {
		return err
	}
	return notLeaderStatus(nl, errors.New(st.Message()))
}

func asNotLeader(err error) (*node.NotLeaderError, bool) {
	var nl *node.NotLeaderError
	ok := errors.As(err, &nl)
	return nl, ok
}

func consistency(c syncv1.Consistency) node.Consistency {
	if c == syncv1.Consistency_CONSISTENCY_STALE {
		return node.Stale
	}
	return node.Linearizable
}

var pullStatuses = map[fsm.PullStatus]syncv1.PullStatus{
	fsm.PullOK:       syncv1.PullStatus_PULL_STATUS_OK,
	fsm.PullUpToDate: syncv1.PullStatus_PULL_STATUS_UP_TO_DATE,
	fsm.PullMore:     syncv1.PullStatus_PULL_STATUS_MORE,
	fsm.PullReset:    syncv1.PullStatus_PULL_STATUS_RESET,
	fsm.PullAhead:    syncv1.PullStatus_PULL_STATUS_AHEAD,
}

func pullStatus(s fsm.PullStatus) syncv1.PullStatus { return pullStatuses[s] }
