package node

import (
	"errors"
	"fmt"
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
)

// NotLeaderError says who leads, as far as this node knows.
type NotLeaderError struct {
	LeaderID string
	// LeaderGRPCAddr is empty when no leader is known (election under way).
	LeaderGRPCAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "node: not the leader; no leader known"
	}
	return fmt.Sprintf("node: not the leader; leader is %s at %s", e.LeaderID, e.LeaderGRPCAddr)
}

// Is makes errors.Is(err, ErrNotLeader) hold.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
