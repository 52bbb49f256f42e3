package node

import (
	"errors"
	"fmt"

	"github.com/syncstore/syncstore/shard"
	"github.com/syncstore/syncstore/storage"
)

// Sentinel errors; the rpc layer maps each to a gRPC code.
var (
	// ErrNotLeader: this node cannot serve a request that needs the leader.
	// The error is a *NotLeaderError naming the leader when one is known.
	ErrNotLeader = errors.New("node: not the leader")
	// ErrLeaderNotReady: this node just became leader and has not yet applied
	// everything committed before its term; linearizable reads wait for that.
	ErrLeaderNotReady = errors.New("node: leader not ready yet")
	// ErrOutcomeUnknown: a write was proposed but its fate is unknown (lost
	// leadership, shutdown, deadline). Retry with the same idempotency key.
	ErrOutcomeUnknown = errors.New("node: outcome unknown")
	// ErrNotApplied: a write was refused before it entered the log (queue
	// full); safe to retry.
	ErrNotApplied = errors.New("node: write not accepted")
	// ErrClosed: the node is shut down.
	ErrClosed = errors.New("node: closed")
	// ErrUnknownGroup: a request names a data group the shard map this node
	// holds does not have.
	ErrUnknownGroup = errors.New("node: no such data group")
	// ErrNoSpace: the data dir's disk has less free space than the reserve;
	// writes are refused until space is freed, reads go on.
	ErrNoSpace = storage.ErrNoSpace
	// ErrStalled: a read needs applied writes whose state commit waits for
	// disk space; retry later or elsewhere.
	ErrStalled = storage.ErrStalled
)

// NotLeaderError says who leads a group, as far as this node knows. When
// the node hosts no replica of the group, the "leader" is the group's
// preferred leader from the shard map.
type NotLeaderError struct {
	Group    shard.GroupID
	LeaderID string
	// LeaderGRPCAddr is empty when no leader is known (election under way).
	LeaderGRPCAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return fmt.Sprintf("node: not the leader of group %d; no leader known", e.Group)
	}
	return fmt.Sprintf("node: not the leader of group %d; try %s at %s", e.Group, e.LeaderID, e.LeaderGRPCAddr)
}

// Is makes errors.Is(err, ErrNotLeader) hold.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// ErrNoShardMap: the cluster has no shard map yet (it is being created).
var ErrNoShardMap = errors.New("node: no shard map yet")
