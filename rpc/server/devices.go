package server

import (
	"context"

	"google.golang.org/grpc"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// devices serves syncstore.v1.Devices on the node's Server.
type devices struct {
	syncv1.UnimplementedDevicesServer
	s *Server
}

func (d *devices) Login(ctx context.Context, req *syncv1.LoginRequest) (*syncv1.LoginResponse, error) {
	res, err := d.s.node.Login(ctx, node.LoginRequest{
		User: req.GetUser(), DeviceID: req.GetDeviceId(), Class: req.GetDeviceClass(), SessionID: req.GetSessionId(), Metadata: req.GetMetadata(),
	})
	if err != nil {
		return forwardOr(d.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.LoginResponse, error) {
			return syncv1.NewDevicesClient(conn).Login(ctx, req)
		})
	}
	out := &syncv1.LoginResponse{Session: sessionProto(res.Session), Refreshed: res.Refreshed}
	for _, e := range res.Ended {
		out.Ended = append(out.Ended, sessionProto(e))
	}
	return out, nil
}

func (d *devices) Logout(ctx context.Context, req *syncv1.LogoutRequest) (*syncv1.LogoutResponse, error) {
	res, err := d.s.node.Logout(ctx, req.GetUser(), req.GetSessionId())
	if err != nil {
		return forwardOr(d.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.LogoutResponse, error) {
			return syncv1.NewDevicesClient(conn).Logout(ctx, req)
		})
	}
	return &syncv1.LogoutResponse{Session: sessionProto(res.Session), AlreadyEnded: res.AlreadyEnded}, nil
}

var sessionStates = map[fsm.SessionState]syncv1.SessionState{
	fsm.SessionValid:   syncv1.SessionState_SESSION_STATE_VALID,
	fsm.SessionRevoked: syncv1.SessionState_SESSION_STATE_REVOKED,
	fsm.SessionUnknown: syncv1.SessionState_SESSION_STATE_UNKNOWN,
}

func (d *devices) ValidateSession(ctx context.Context, req *syncv1.ValidateSessionRequest) (*syncv1.ValidateSessionResponse, error) {
	state, s, err := d.s.node.ValidateSession(ctx, req.GetUser(), req.GetSessionId(), consistency(req.GetConsistency()))
	if err != nil {
		return forwardOr(d.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.ValidateSessionResponse, error) {
			return syncv1.NewDevicesClient(conn).ValidateSession(ctx, req)
		})
	}
	out := &syncv1.ValidateSessionResponse{State: sessionStates[state]}
	if state != fsm.SessionUnknown {
		out.Session = sessionProto(s)
	}
	return out, nil
}

func (d *devices) Ack(ctx context.Context, req *syncv1.AckRequest) (*syncv1.AckResponse, error) {
	res, err := d.s.node.Ack(ctx, req.GetUser(), req.GetDeviceId(), req.GetTimeline(), req.GetSeq())
	if err != nil {
		return forwardOr(d.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.AckResponse, error) {
			return syncv1.NewDevicesClient(conn).Ack(ctx, req)
		})
	}
	return &syncv1.AckResponse{Seq: res.Seq, Advanced: res.Advanced, SessionId: res.SessionID}, nil
}

func (d *devices) Cursors(ctx context.Context, req *syncv1.CursorsRequest) (*syncv1.CursorsResponse, error) {
	cs, err := d.s.node.Cursors(ctx, req.GetUser(), req.GetDeviceId(), consistency(req.GetConsistency()))
	if err != nil {
		return forwardOr(d.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.CursorsResponse, error) {
			return syncv1.NewDevicesClient(conn).Cursors(ctx, req)
		})
	}
	return &syncv1.CursorsResponse{Cursors: cursorsProto(cs)}, nil
}

func (d *devices) ListDevices(ctx context.Context, req *syncv1.ListDevicesRequest) (*syncv1.ListDevicesResponse, error) {
	res, err := d.s.node.Devices(ctx, req.GetUser(), consistency(req.GetConsistency()))
	if err != nil {
		return forwardOr(d.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.ListDevicesResponse, error) {
			return syncv1.NewDevicesClient(conn).ListDevices(ctx, req)
		})
	}
	out := &syncv1.ListDevicesResponse{Epoch: res.Epoch}
	for _, a := range res.Active {
		out.Active = append(out.Active, &syncv1.Device{Session: sessionProto(a.Session), Cursors: cursorsProto(a.Cursors)})
	}
	for _, e := range res.Ended {
		out.Ended = append(out.Ended, sessionProto(e))
	}
	return out, nil
}

func (d *devices) MarkRead(ctx context.Context, req *syncv1.MarkReadRequest) (*syncv1.MarkReadResponse, error) {
	res, err := d.s.node.MarkRead(ctx, req.GetUser(), req.GetConversation(), req.GetSeq())
	if err != nil {
		return forwardOr(d.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.MarkReadResponse, error) {
			return syncv1.NewDevicesClient(conn).MarkRead(ctx, req)
		})
	}
	return &syncv1.MarkReadResponse{Conversation: summaryProto(res.Summary), Advanced: res.Advanced}, nil
}

func (d *devices) Conversations(ctx context.Context, req *syncv1.ConversationsRequest) (*syncv1.ConversationsResponse, error) {
	res, err := d.s.node.Conversations(ctx, req.GetUser(), req.GetAfterKey(), int(req.GetLimit()), consistency(req.GetConsistency()))
	if err != nil {
		return forwardOr(d.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.ConversationsResponse, error) {
			return syncv1.NewDevicesClient(conn).Conversations(ctx, req)
		})
	}
	out := &syncv1.ConversationsResponse{Version: res.Version, More: res.More, NextAfterKey: res.NextAfterKey}
	for _, c := range res.Conversations {
		out.Conversations = append(out.Conversations, summaryProto(c))
	}
	return out, nil
}

func sessionProto(s fsm.Session) *syncv1.Session {
	return &syncv1.Session{
		SessionId: s.SessionID, DeviceId: s.DeviceID, DeviceClass: s.Class, Epoch: s.Epoch, LoginMs: s.LoginMs,
		LastSeenMs: s.LastSeenMs, Metadata: s.Metadata, Ended: s.Ended, EndReason: s.EndReason, EndedMs: s.EndedMs, EndedBy: s.EndedBy,
	}
}

func cursorsProto(cs []fsm.Cursor) []*syncv1.Cursor {
	out := make([]*syncv1.Cursor, 0, len(cs))
	for _, c := range cs {
		out = append(out, &syncv1.Cursor{Timeline: c.Timeline, Seq: c.Seq, Head: c.Head, Lag: c.Lag()})
	}
	return out
}

func summaryProto(c fsm.ConversationSummary) *syncv1.ConversationSummary {
	return &syncv1.ConversationSummary{Conversation: c.Conversation, LastSeq: c.LastSeq, LastSender: c.LastSender,
		LastTsMs: c.LastTsMs, Unread: c.Unread, ReadSeq: c.ReadSeq}
}
