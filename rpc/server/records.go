package server

import (
	"context"
	"errors"
	"strings"
	"sync"

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

// records serves syncstore.v1.Records on the node's Server.
type records struct {
	syncv1.UnimplementedRecordsServer
	s *Server
}

// Write applies a collection write through the leader.
func (r *records) Write(ctx context.Context, req *syncv1.WriteRequest) (*syncv1.WriteResponse, error) {
	w := node.WriteRequest{Collection: req.GetCollection(), IdempotencyKey: req.GetIdempotencyKey(), ExpectedVersion: req.ExpectedVersion}
	for _, op := range req.GetOps() {
		w.Ops = append(w.Ops, node.RecordOp{Key: op.GetKey(), Delete: op.GetDelete(), Value: op.GetValue(), Metadata: op.GetMetadata()})
	}
	for _, c := range req.GetConditions() {
		w.Conditions = append(w.Conditions, fsm.RecordVersion{Key: c.GetKey(), Version: c.GetVersion()})
	}
	for _, c := range req.GetCopies() {
		w.Copies = append(w.Copies, node.RecordCopy{Key: c.GetKey(), TargetKey: c.GetTargetKey(), Targets: c.GetTargets()})
	}
	res, err := r.s.node.Write(ctx, w)
	if err != nil {
		return forwardOr(r.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.WriteResponse, error) {
			return syncv1.NewRecordsClient(conn).Write(ctx, req)
		})
	}
	return &syncv1.WriteResponse{Version: res.Version, Deduplicated: res.Deduplicated}, nil
}

// Get reads records by key, or a page of the collection in key order.
func (r *records) Get(ctx context.Context, req *syncv1.GetRequest) (*syncv1.GetResponse, error) {
	res, err := r.s.node.GetRecords(ctx, req.GetCollection(), req.GetKeys(), req.GetAfterKey(), int(req.GetLimit()), consistency(req.GetConsistency()))
	if err != nil {
		return forwardOr(r.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.GetResponse, error) {
			return syncv1.NewRecordsClient(conn).Get(ctx, req)
		})
	}
	out := &syncv1.GetResponse{Version: res.Version, Digest: res.Digest, More: res.More, NextAfterKey: res.NextAfterKey}
	for _, rec := range res.Records {
		out.Records = append(out.Records, recordProto(rec))
	}
	return out, nil
}

// Sync returns a page of a collection's changes since a version.
func (r *records) Sync(ctx context.Context, req *syncv1.RecordSyncRequest) (*syncv1.RecordSyncResponse, error) {
	res, err := r.s.node.SyncRecords(ctx, req.GetCollection(), req.GetSinceVersion(), int(req.GetLimit()), consistency(req.GetConsistency()))
	if err != nil {
		return forwardOr(r.s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.RecordSyncResponse, error) {
			return syncv1.NewRecordsClient(conn).Sync(ctx, req)
		})
	}
	return syncProto(req.GetCollection(), res), nil
}

// SyncMany serves the collections of groups this node leads and forwards
// the rest, grouped by leader, one call per leader, in parallel.
func (r *records) SyncMany(ctx context.Context, req *syncv1.SyncManyRequest) (*syncv1.SyncManyResponse, error) {
	reqs := make([]node.SyncRequest, len(req.GetCollections()))
	for i, c := range req.GetCollections() {
		reqs[i] = node.SyncRequest{Collection: c.GetCollection(), Since: c.GetSinceVersion(), Limit: int(c.GetLimit()), Stale: c.GetConsistency() == syncv1.Consistency_CONSISTENCY_STALE}
	}
	outcomes, err := r.s.node.SyncMany(ctx, reqs)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &syncv1.SyncManyResponse{Results: make([]*syncv1.SyncManyResult, len(reqs))}
	forward := map[string][]int{} // leader address -> indexes to forward there
	for i, o := range outcomes {
		if nl, ok := asNotLeader(o.Err); ok && nl.LeaderGRPCAddr != "" && nl.LeaderID != r.s.node.ID() && !forwarded(ctx) {
			forward[nl.LeaderGRPCAddr] = append(forward[nl.LeaderGRPCAddr], i)
			continue
		}
		out.Results[i] = syncManyResult(reqs[i].Collection, o.Result, o.Err)
	}
	var wg sync.WaitGroup
	for addr, idxs := range forward {
		wg.Go(func() {
			sub := &syncv1.SyncManyRequest{}
			for _, i := range idxs {
				sub.Collections = append(sub.Collections, req.GetCollections()[i])
			}
			resp, ferr := r.forwardSyncMany(ctx, addr, sub)
			for j, i := range idxs {
				if ferr != nil || j >= len(resp.GetResults()) {
					if ferr == nil {
						ferr = errors.New("the leader answered fewer collections than asked")
					}
					out.Results[i] = errorResult(reqs[i].Collection, ferr)
					continue
				}
				out.Results[i] = resp.GetResults()[j]
			}
		})
	}
	wg.Wait()
	return out, nil
}

func (r *records) forwardSyncMany(ctx context.Context, addr string, sub *syncv1.SyncManyRequest) (*syncv1.SyncManyResponse, error) {
	conn, err := r.s.peers.conn(addr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "the leader at %s is unreachable: %v", addr, err)
	}
	return syncv1.NewRecordsClient(conn).SyncMany(markForwarded(ctx, r.s.node.ID()), sub)
}

func syncManyResult(collection string, res fsm.SyncResult, err error) *syncv1.SyncManyResult {
	if err != nil {
		return errorResult(collection, toStatus(err))
	}
	return &syncv1.SyncManyResult{Collection: collection, Sync: syncProto(collection, res)}
}

func errorResult(collection string, err error) *syncv1.SyncManyResult {
	st := status.Convert(err)
	// A bad id may not be UTF-8, which a proto3 string cannot carry: the
	// answer names it with the bad bytes replaced.
	return &syncv1.SyncManyResult{Collection: strings.ToValidUTF8(collection, "\uFFFD"), ErrorCode: uint32(st.Code()), ErrorMessage: st.Message()}
}

var syncStatuses = map[fsm.SyncStatus]syncv1.RecordSyncStatus{
	fsm.SyncOK:       syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_OK,
	fsm.SyncUpToDate: syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_UP_TO_DATE,
	fsm.SyncMore:     syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_MORE,
	fsm.SyncReset:    syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_RESET,
	fsm.SyncAhead:    syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_AHEAD,
}

func syncProto(collection string, res fsm.SyncResult) *syncv1.RecordSyncResponse {
	version := res.PageVersion
	if res.Status == fsm.SyncReset || res.Status == fsm.SyncAhead {
		version = res.Version
	}
	out := &syncv1.RecordSyncResponse{
		Collection: collection,
		Status:     syncStatuses[res.Status],
		Version:    version,
		Digest:     res.Digest,
		Horizon:    res.Horizon,
	}
	for _, rec := range res.Changes {
		out.Changes = append(out.Changes, recordProto(rec))
	}
	return out
}

func recordProto(r fsm.Record) *syncv1.Record {
	return &syncv1.Record{Key: r.Key, Version: r.Version, Deleted: r.Deleted, Value: r.Value, Metadata: r.Metadata, TsMs: r.TsMs}
}

// conditionFailedStatus is FAILED_PRECONDITION with the current versions
// as a ConditionFailed detail.
func conditionFailedStatus(cf *fsm.ConditionFailedError) *status.Status {
	st := status.New(codes.FailedPrecondition, cf.Error())
	d := &syncv1.ConditionFailed{Collection: cf.Collection, Version: cf.Version}
	for _, r := range cf.Records {
		d.Records = append(d.Records, &syncv1.RecordVersion{Key: r.Key, Version: r.Version})
	}
	if withDetail, err := st.WithDetails(d); err == nil {
		return withDetail
	}
	return st
}

// Copy applies record copies to collections of one group (Peer).
func (s *Server) Copy(ctx context.Context, req *syncv1.CopyRequest) (*syncv1.CopyResponse, error) {
	res, err := s.node.Copy(ctx, shard.GroupID(req.GetGroupId()), copyItems(req.GetItems()))
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.CopyResponse, error) {
			return syncv1.NewPeerClient(conn).Copy(ctx, req)
		})
	}
	return &syncv1.CopyResponse{Written: uint32(res.Written), Skipped: uint32(res.Skipped)}, nil
}

func copyItems(in []*syncv1.CopyItem) []*fsmpb.CopyItem {
	out := make([]*fsmpb.CopyItem, len(in))
	for i, it := range in {
		out[i] = &fsmpb.CopyItem{
			Collection: it.GetCollection(), Key: it.GetKey(), Deleted: it.GetDeleted(), Value: it.GetValue(),
			Metadata: it.GetMetadata(), Source: it.GetSource(), SourceVersion: it.GetSourceVersion(),
		}
	}
	return out
}

func copyRequest(group shard.GroupID, items []*fsmpb.CopyItem) *syncv1.CopyRequest {
	req := &syncv1.CopyRequest{GroupId: proto.Uint64(uint64(group)), Items: make([]*syncv1.CopyItem, len(items))}
	for i, it := range items {
		req.Items[i] = &syncv1.CopyItem{
			Collection: proto.String(it.GetCollection()), Key: proto.String(it.GetKey()), Deleted: proto.Bool(it.GetDeleted()),
			Value: it.GetValue(), Metadata: it.GetMetadata(), Source: proto.String(it.GetSource()), SourceVersion: proto.Uint64(it.GetSourceVersion()),
		}
	}
	return req
}
