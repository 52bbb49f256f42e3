package server

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// Send posts a message to a conversation through its leader.
func (s *Server) Send(ctx context.Context, req *syncv1.SendRequest) (*syncv1.SendResponse, error) {
	res, err := s.node.Send(ctx, node.SendRequest{
		Conversation:   req.GetConversation(),
		Sender:         req.GetSender(),
		Recipients:     req.GetRecipients(),
		Payload:        req.GetPayload(),
		IdempotencyKey: req.GetIdempotencyKey(),
		Metadata:       req.GetMetadata(),
	})
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.SendResponse, error) {
			return syncv1.NewSyncClient(conn).Send(ctx, req)
		})
	}
	return &syncv1.SendResponse{Seq: res.Seq, TsMs: res.TsMs, Deduplicated: res.Deduplicated, Recipients: uint32(res.Recipients), Light: res.Light}, nil
}

var historyStatuses = map[fsm.HistoryStatus]syncv1.HistoryStatus{
	fsm.HistoryMore:  syncv1.HistoryStatus_HISTORY_STATUS_MORE,
	fsm.HistoryEnd:   syncv1.HistoryStatus_HISTORY_STATUS_END,
	fsm.HistoryReset: syncv1.HistoryStatus_HISTORY_STATUS_RESET,
}

func historyStatus(s fsm.HistoryStatus) syncv1.HistoryStatus { return historyStatuses[s] }

// History reads a page backwards; linearizable reads go to the leader.
func (s *Server) History(ctx context.Context, req *syncv1.HistoryRequest) (*syncv1.HistoryResponse, error) {
	res, err := s.node.History(ctx, req.GetTimeline(), req.GetBeforeSeq(), int(req.GetLimit()), consistency(req.GetConsistency()))
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.HistoryResponse, error) {
			return syncv1.NewSyncClient(conn).History(ctx, req)
		})
	}
	out := &syncv1.HistoryResponse{
		Status:    historyStatus(res.Status),
		HeadSeq:   res.Head,
		OldestSeq: res.Oldest,
		Entries:   make([]*syncv1.Entry, len(res.Entries)),
	}
	for i, e := range res.Entries {
		out.Entries[i] = entryProto(e)
	}
	return out, nil
}

// Deliver applies conversation deliveries to a group this node leads, or
// forwards them once to its leader.
func (s *Server) Deliver(ctx context.Context, req *syncv1.DeliverRequest) (*syncv1.DeliverResponse, error) {
	items := make([]node.Delivery, len(req.GetItems()))
	for i, it := range req.GetItems() {
		items[i] = node.Delivery{
			Timeline:        it.GetTimeline(),
			Conversation:    it.GetConversation(),
			ConversationSeq: it.GetConversationSeq(),
			Sender:          it.GetSender(),
			Payload:         it.GetPayload(),
			Light:           it.GetLight(),
			Metadata:        it.GetMetadata(),
			DeliverySeq:     it.GetDeliverySeq(),
		}
	}
	res, err := s.node.Deliver(ctx, shard.GroupID(req.GetGroupId()), items)
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.DeliverResponse, error) {
			return syncv1.NewPeerClient(conn).Deliver(ctx, req)
		})
	}
	return &syncv1.DeliverResponse{Written: uint32(res.Written), Skipped: uint32(res.Skipped)}, nil
}

func deliverRequest(group shard.GroupID, items []node.Delivery) *syncv1.DeliverRequest {
	req := &syncv1.DeliverRequest{GroupId: proto.Uint64(uint64(group)), Items: make([]*syncv1.DeliveryItem, len(items))}
	for i, it := range items {
		req.Items[i] = &syncv1.DeliveryItem{
			Timeline:        proto.String(it.Timeline),
			Conversation:    proto.String(it.Conversation),
			ConversationSeq: proto.Uint64(it.ConversationSeq),
			Sender:          proto.String(it.Sender),
			Payload:         it.Payload,
			Light:           proto.Bool(it.Light),
			Metadata:        it.Metadata,
			DeliverySeq:     proto.Uint64(it.DeliverySeq),
		}
	}
	return req
}

// DigestAt answers a group leader's replica digest check.
func (s *Server) DigestAt(ctx context.Context, req *syncv1.DigestAtRequest) (*syncv1.DigestAtResponse, error) {
	d, ok, err := s.node.DigestAt(shard.GroupID(req.GetGroupId()), req.GetIndex())
	if err != nil {
		return nil, toStatus(err)
	}
	return &syncv1.DigestAtResponse{Known: ok, Digest: d}, nil
}

// Fence fences this node's replica of a group its leader found diverged.
func (s *Server) Fence(ctx context.Context, req *syncv1.FenceRequest) (*syncv1.FenceResponse, error) {
	if len(req.GetReason()) > maxFenceReasonBytes {
		return nil, status.Errorf(codes.InvalidArgument, "reason of %d bytes, at most %d", len(req.GetReason()), maxFenceReasonBytes)
	}
	if err := s.node.FenceReplica(shard.GroupID(req.GetGroupId()), req.GetReason()); err != nil {
		return nil, toStatus(err)
	}
	return &syncv1.FenceResponse{}, nil
}

// maxFenceReasonBytes bounds the reason a Fence request carries (it is
// logged and shown in status).
const maxFenceReasonBytes = 4096
