package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// Put is a record op that sets key to value.
func Put(key string, value []byte) *syncv1.RecordOp {
	return &syncv1.RecordOp{Key: proto.String(key), Value: value}
}

// Delete is a record op that deletes key (leaving a tombstone).
func Delete(key string) *syncv1.RecordOp {
	return &syncv1.RecordOp{Key: proto.String(key), Delete: proto.Bool(true)}
}

// IfVersion is a condition: key must be at version (0: absent or deleted).
func IfVersion(key string, version uint64) *syncv1.RecordCondition {
	return &syncv1.RecordCondition{Key: proto.String(key), Version: proto.Uint64(version)}
}

// WriteOptions are the optional parts of a Write.
type WriteOptions struct {
	Conditions []*syncv1.RecordCondition
	// ExpectedVersion, when set, is the collection version the write needs.
	ExpectedVersion *uint64
	// IdempotencyKey identifies the write across retries; when empty the
	// client makes one up for this call (its own retries, not the caller's).
	IdempotencyKey string
	// Copies: records of this write to copy into other collections.
	Copies []*syncv1.RecordCopy
}

// CopyTo copies the record the write sets at key into each target
// collection under targetKey.
func CopyTo(key, targetKey string, targets ...string) *syncv1.RecordCopy {
	return &syncv1.RecordCopy{Key: proto.String(key), TargetKey: proto.String(targetKey), Targets: targets}
}

// Write applies ops to a collection atomically and returns the version the
// write produced. A failed condition is FAILED_PRECONDITION with a
// syncv1.ConditionFailed detail.
func (c *Client) Write(ctx context.Context, collection string, ops []*syncv1.RecordOp, o WriteOptions) (*syncv1.WriteResponse, error) {
	key := o.IdempotencyKey
	if key == "" {
		key = randomKey()
	}
	req := &syncv1.WriteRequest{Collection: proto.String(collection), Ops: ops, Conditions: o.Conditions, ExpectedVersion: o.ExpectedVersion, IdempotencyKey: proto.String(key), Copies: o.Copies}
	var resp *syncv1.WriteResponse
	err := c.do(ctx, collection, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewRecordsClient(conn).Write(ctx, req)
		return err
	})
	return resp, err
}

// Get reads records by key; with no keys, a page of up to limit live
// records after afterKey.
func (c *Client) Get(ctx context.Context, collection string, keys []string, afterKey string, limit uint32, cons Consistency) (*syncv1.GetResponse, error) {
	req := &syncv1.GetRequest{Collection: proto.String(collection), Keys: keys, AfterKey: proto.String(afterKey), Limit: proto.Uint32(limit), Consistency: cons.Enum()}
	var resp *syncv1.GetResponse
	err := c.do(ctx, collection, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewRecordsClient(conn).Get(ctx, req)
		return err
	})
	return resp, err
}

// SyncRecords returns a page of the records changed after since.
func (c *Client) SyncRecords(ctx context.Context, collection string, since uint64, limit uint32, cons Consistency) (*syncv1.RecordSyncResponse, error) {
	req := &syncv1.RecordSyncRequest{Collection: proto.String(collection), SinceVersion: proto.Uint64(since), Limit: proto.Uint32(limit), Consistency: cons.Enum()}
	var resp *syncv1.RecordSyncResponse
	err := c.do(ctx, collection, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewRecordsClient(conn).Sync(ctx, req)
		return err
	})
	return resp, err
}

// SyncMany syncs many collections in one call to any node, which fans out
// across groups; each result carries its own error.
func (c *Client) SyncMany(ctx context.Context, reqs []*syncv1.RecordSyncRequest) (*syncv1.SyncManyResponse, error) {
	req := &syncv1.SyncManyRequest{Collections: reqs}
	var resp *syncv1.SyncManyResponse
	err := c.do(ctx, "", func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewRecordsClient(conn).SyncMany(ctx, req)
		return err
	})
	return resp, err
}
