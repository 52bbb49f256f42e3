package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// Every Devices call is routed by the user: a user's sessions, cursors,
// read markers and derived collections live in the user's group. Each is
// safe to retry (a Login with its session id again is a reconnect; Logout,
// Ack and MarkRead are idempotent). A Login retried after an outcome the
// client did not see reports refreshed and no ended sessions: the sessions
// it ended are in device-events/<user>.

// Login registers or refreshes a device session.
func (c *Client) Login(ctx context.Context, user, device, class, session string, metadata map[string]string) (*syncv1.LoginResponse, error) {
	req := &syncv1.LoginRequest{User: proto.String(user), DeviceId: proto.String(device), DeviceClass: proto.String(class), SessionId: proto.String(session), Metadata: metadata}
	return devicesCall(c, ctx, user, func(ctx context.Context, d syncv1.DevicesClient) (*syncv1.LoginResponse, error) {
		return d.Login(ctx, req)
	})
}

// Logout ends a session.
func (c *Client) Logout(ctx context.Context, user, session string) (*syncv1.LogoutResponse, error) {
	req := &syncv1.LogoutRequest{User: proto.String(user), SessionId: proto.String(session)}
	return devicesCall(c, ctx, user, func(ctx context.Context, d syncv1.DevicesClient) (*syncv1.LogoutResponse, error) {
		return d.Logout(ctx, req)
	})
}

// ValidateSession says whether a session is valid, revoked or unknown.
func (c *Client) ValidateSession(ctx context.Context, user, session string, cons Consistency) (*syncv1.ValidateSessionResponse, error) {
	req := &syncv1.ValidateSessionRequest{User: proto.String(user), SessionId: proto.String(session), Consistency: cons.Enum()}
	return devicesCall(c, ctx, user, func(ctx context.Context, d syncv1.DevicesClient) (*syncv1.ValidateSessionResponse, error) {
		return d.ValidateSession(ctx, req)
	})
}

// Ack records how far a device has synced one of its user's timelines
// (the user id, or shard.DeviceEventsTimeline(user)).
func (c *Client) Ack(ctx context.Context, user, device, timeline string, seq uint64) (*syncv1.AckResponse, error) {
	req := &syncv1.AckRequest{User: proto.String(user), DeviceId: proto.String(device), Timeline: proto.String(timeline), Seq: proto.Uint64(seq)}
	return devicesCall(c, ctx, user, func(ctx context.Context, d syncv1.DevicesClient) (*syncv1.AckResponse, error) { return d.Ack(ctx, req) })
}

// Cursors returns a device's cursors and lags.
func (c *Client) Cursors(ctx context.Context, user, device string, cons Consistency) (*syncv1.CursorsResponse, error) {
	req := &syncv1.CursorsRequest{User: proto.String(user), DeviceId: proto.String(device), Consistency: cons.Enum()}
	return devicesCall(c, ctx, user, func(ctx context.Context, d syncv1.DevicesClient) (*syncv1.CursorsResponse, error) {
		return d.Cursors(ctx, req)
	})
}

// ListDevices returns a user's active sessions with cursors, and the
// recently ended ones.
func (c *Client) ListDevices(ctx context.Context, user string, cons Consistency) (*syncv1.ListDevicesResponse, error) {
	req := &syncv1.ListDevicesRequest{User: proto.String(user), Consistency: cons.Enum()}
	return devicesCall(c, ctx, user, func(ctx context.Context, d syncv1.DevicesClient) (*syncv1.ListDevicesResponse, error) {
		return d.ListDevices(ctx, req)
	})
}

// MarkRead raises the user's read marker of a conversation.
func (c *Client) MarkRead(ctx context.Context, user, conversation string, seq uint64) (*syncv1.MarkReadResponse, error) {
	req := &syncv1.MarkReadRequest{User: proto.String(user), Conversation: proto.String(conversation), Seq: proto.Uint64(seq)}
	return devicesCall(c, ctx, user, func(ctx context.Context, d syncv1.DevicesClient) (*syncv1.MarkReadResponse, error) {
		return d.MarkRead(ctx, req)
	})
}

// Conversations reads a page of a user's conversation list.
func (c *Client) Conversations(ctx context.Context, user, afterKey string, limit uint32, cons Consistency) (*syncv1.ConversationsResponse, error) {
	req := &syncv1.ConversationsRequest{User: proto.String(user), AfterKey: proto.String(afterKey), Limit: proto.Uint32(limit), Consistency: cons.Enum()}
	return devicesCall(c, ctx, user, func(ctx context.Context, d syncv1.DevicesClient) (*syncv1.ConversationsResponse, error) {
		return d.Conversations(ctx, req)
	})
}

// DecodeConversation decodes a record value of conversations/<user>.
func DecodeConversation(key string, value []byte) (*syncv1.ConversationSummary, error) {
	var s syncv1.ConversationSummary
	if err := proto.Unmarshal(value, &s); err != nil {
		return nil, err
	}
	s.Conversation = key
	return &s, nil
}

// DecodeDevice decodes a record value of devices/<user>.
func DecodeDevice(value []byte) (*syncv1.DeviceRecord, error) {
	var d syncv1.DeviceRecord
	if err := proto.Unmarshal(value, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// DevicesCollection, ConversationsCollection and DeviceEventsTimeline name
// a user's derived state.
var (
	DevicesCollection       = shard.DevicesCollection
	ConversationsCollection = shard.ConversationsCollection
	DeviceEventsTimeline    = shard.DeviceEventsTimeline
)

func devicesCall[Resp any](c *Client, ctx context.Context, user string, call func(context.Context, syncv1.DevicesClient) (Resp, error)) (Resp, error) {
	var resp Resp
	err := c.do(ctx, user, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = call(ctx, syncv1.NewDevicesClient(conn))
		return err
	})
	return resp, err
}
