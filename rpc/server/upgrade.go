package server

import (
	"context"

	"google.golang.org/grpc"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// FinalizeUpgrade raises the cluster's active version; a node that is not
// the meta leader forwards the call to it.
func (s *Server) FinalizeUpgrade(ctx context.Context, req *syncv1.FinalizeUpgradeRequest) (*syncv1.FinalizeUpgradeResponse, error) {
	if req.GetVersion() == 0 {
		// The newest this node supports, named before it is forwarded: the
		// meta leader may run an older binary.
		req = &syncv1.FinalizeUpgradeRequest{Version: fsm.SupportedClusterVersion()}
	}
	active, changed, err := s.node.FinalizeUpgrade(ctx, req.GetVersion())
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.FinalizeUpgradeResponse, error) {
			return syncv1.NewAdminClient(conn).FinalizeUpgrade(ctx, req)
		})
	}
	return &syncv1.FinalizeUpgradeResponse{ActiveVersion: active, Changed: changed}, nil
}

// UpgradeProbe proposes the test build's probe command in the key's group,
// forwarded to its leader.
func (s *Server) UpgradeProbe(ctx context.Context, req *syncv1.UpgradeProbeRequest) (*syncv1.UpgradeProbeResponse, error) {
	n, group, err := s.node.UpgradeProbe(ctx, req.GetKey(), req.GetNote())
	if err != nil {
		return forwardOr(s, ctx, err, func(ctx context.Context, conn *grpc.ClientConn) (*syncv1.UpgradeProbeResponse, error) {
			return syncv1.NewAdminClient(conn).UpgradeProbe(ctx, req)
		})
	}
	return &syncv1.UpgradeProbeResponse{Probes: n, GroupId: uint64(group)}, nil
}
