package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// Send posts a message to a conversation, which delivers it to the
// recipients' and the sender's user timelines. It goes to the leader of the
// conversation's group. Like Append, it is retried with one idempotency key
// (made up when o has none), so a retry never posts the message twice.
func (c *Client) Send(ctx context.Context, conversation, sender string, recipients []string, payload []byte, o AppendOptions) (*syncv1.SendResponse, error) {
	key := o.IdempotencyKey
	if key == "" {
		key = randomKey()
	}
	req := &syncv1.SendRequest{
		Conversation:   proto.String(conversation),
		Sender:         proto.String(sender),
		Recipients:     recipients,
		Payload:        payload,
		IdempotencyKey: proto.String(key),
		Metadata:       o.Metadata,
	}
	var resp *syncv1.SendResponse
	err := c.do(ctx, conversation, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewSyncClient(conn).Send(ctx, req)
		return err
	})
	return resp, err
}

// History pages a timeline backwards: up to limit of the newest entries with
// seq < beforeSeq (0: from the newest), returned oldest first.
func (c *Client) History(ctx context.Context, timeline string, beforeSeq uint64, limit uint32, cons Consistency) (*syncv1.HistoryResponse, error) {
	req := &syncv1.HistoryRequest{Timeline: proto.String(timeline), BeforeSeq: proto.Uint64(beforeSeq), Limit: proto.Uint32(limit), Consistency: cons.Enum()}
	var resp *syncv1.HistoryResponse
	err := c.do(ctx, timeline, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewSyncClient(conn).History(ctx, req)
		return err
	})
	return resp, err
}
