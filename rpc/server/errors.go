package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// errorCodes maps the sentinel errors of the layers below to gRPC codes.
// The first match wins; anything unlisted is INTERNAL.
var errorCodes = []struct {
	err  error
	code codes.Code
}{
	// The shard map changed under an operator's compare-and-set too often:
	// retry.
	{fsm.ErrVersionConflict, codes.Aborted},
	{fsm.ErrInvalidArgument, codes.InvalidArgument},
	{fsm.ErrMalformedCommand, codes.InvalidArgument},
	{fsm.ErrNodeConflict, codes.FailedPrecondition},
	{fsm.ErrDeliveryGap, codes.FailedPrecondition},
	{fsm.ErrConditionFailed, codes.FailedPrecondition},
	{fsm.ErrSessionEnded, codes.FailedPrecondition},
	{fsm.ErrSessionConflict, codes.FailedPrecondition},
	{fsm.ErrNoSession, codes.FailedPrecondition},
	{fsm.ErrUnknownSession, codes.NotFound},
	{fsm.ErrTooManySessions, codes.ResourceExhausted},
	{fsm.ErrWrongGroup, codes.Aborted},
	// A write to a range fenced for a move: it succeeds once the move has
	// switched (the client refreshes its map) or was aborted.
	{fsm.ErrMoving, codes.Unavailable},
	{fsm.ErrMoveConflict, codes.FailedPrecondition},
	{fsm.ErrUnknownMove, codes.NotFound},
	// A stored value that fails its checksum on this replica: never served
	// as data. DATA_LOSS, which clients retry on another replica no sooner
	// than the group has a leader with an intact copy.
	{fsm.ErrCorruptState, codes.DataLoss},
	{node.ErrNoSpace, codes.ResourceExhausted},
	{node.ErrStalled, codes.Unavailable},
	// A fenced replica serves nothing; another replica of the group does.
	{node.ErrFenced, codes.Unavailable},
	{node.ErrUnknownGroup, codes.NotFound},
	// Node removal and operator moves: an unknown node is NOT_FOUND; a
	// request the cluster's shape refuses is FAILED_PRECONDITION, its
	// message naming what (the groups that would lose their quorum).
	{node.ErrUnknownNode, codes.NotFound},
	{fsm.ErrNodeState, codes.FailedPrecondition},
	{node.ErrLastActiveNode, codes.FailedPrecondition},
	{node.ErrWouldLoseQuorum, codes.FailedPrecondition},
	{node.ErrNodeNotActive, codes.FailedPrecondition},
	{node.ErrBadMove, codes.FailedPrecondition},
	{node.ErrRemoved, codes.FailedPrecondition},
	// Rolling upgrades: a command above the cluster's version, a finalize
	// with nodes behind, a joiner too old, a release binary asked to probe.
	{fsm.ErrClusterVersion, codes.FailedPrecondition},
	{node.ErrUpgradeBlocked, codes.FailedPrecondition},
	{node.ErrBinaryTooOld, codes.FailedPrecondition},
	{node.ErrNoUpgradeProbe, codes.FailedPrecondition},
	{node.ErrNotLeader, codes.Unavailable},
	{node.ErrLeaderNotReady, codes.Unavailable},
	{node.ErrOutcomeUnknown, codes.Unavailable},
	{node.ErrNotApplied, codes.Unavailable},
	{node.ErrNoShardMap, codes.Unavailable},
	{node.ErrClosed, codes.Unavailable},
	{fsm.ErrClosed, codes.Unavailable},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

// toStatus turns an error from node or fsm into a gRPC status error. A
// not-leader error carries a NotLeader detail so clients can go straight to
// the leader.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status (from a forwarded call)
	}
	code := codes.Internal
	for _, m := range errorCodes {
		if errors.Is(err, m.err) {
			code = m.code
			break
		}
	}
	var cf *fsm.ConditionFailedError
	if errors.As(err, &cf) {
		return conditionFailedStatus(cf).Err()
	}
	st := status.New(code, err.Error())
	var nl *node.NotLeaderError
	if errors.As(err, &nl) {
		if withDetail, derr := st.WithDetails(&syncv1.NotLeader{LeaderId: nl.LeaderID, LeaderAddr: nl.LeaderGRPCAddr, GroupId: uint64(nl.Group)}); derr == nil {
			st = withDetail
		}
	}
	return st.Err()
}

// notLeaderStatus answers for a leader this node knows but could not reach.
func notLeaderStatus(nl *node.NotLeaderError, cause error) error {
	st := status.Newf(codes.Unavailable, "node: not the leader of group %d; %s at %s unreachable from here: %v", nl.Group, nl.LeaderID, nl.LeaderGRPCAddr, cause)
	if withDetail, err := st.WithDetails(&syncv1.NotLeader{LeaderId: nl.LeaderID, LeaderAddr: nl.LeaderGRPCAddr, GroupId: uint64(nl.Group)}); err == nil {
		st = withDetail
	}
	return st.Err()
}
