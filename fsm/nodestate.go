package fsm

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// NodeState is a registered node's place in its life cycle: active ->
// draining -> removed. Only a registration (a fresh data dir under the old
// id) brings a removed node back, as active.
type NodeState int32

// Node states (the values of fsmpb.NodeState).
const (
	NodeActive   = NodeState(fsmpb.NodeState_NODE_STATE_ACTIVE)
	NodeDraining = NodeState(fsmpb.NodeState_NODE_STATE_DRAINING)
	NodeRemoved  = NodeState(fsmpb.NodeState_NODE_STATE_REMOVED)
)

// String is the state as syncctl shows it.
func (s NodeState) String() string {
	switch s {
	case NodeActive:
		return "active"
	case NodeDraining:
		return "draining"
	case NodeRemoved:
		return "removed"
	}
	return fmt.Sprintf("state(%d)", int32(s))
}

// ErrNodeState marks a SetNodeState the registry refuses: the node is not
// in the expected state, the step is not allowed, or it would drain the
// last active node. Nothing was changed.
var ErrNodeState = errors.New("fsm: node state change refused")

// ErrUnknownNode: the node id is not registered.
var ErrUnknownNode = errors.New("fsm: unknown node")

// ValidateSetNodeState checks a SetNodeState's content: a valid node id, known
// states, a step of the life cycle (active -> draining, draining ->
// draining to declare it dead, draining -> removed) and a dead flag only
// where a node can be dead.
func ValidateSetNodeState(c *fsmpb.SetNodeState) error {
	if err := ValidateNodeID(c.GetNodeId()); err != nil {
		return err
	}
	from, to := NodeState(c.GetExpectedState()), NodeState(c.GetState())
	for _, s := range []NodeState{from, to} {
		if s != NodeActive && s != NodeDraining && s != NodeRemoved {
			return fmt.Errorf("%w: unknown node state %d", ErrInvalidArgument, int32(s))
		}
	}
	switch {
	case from == NodeActive && to == NodeDraining:
	case from == NodeDraining && to == NodeDraining && c.GetDead():
	case from == NodeDraining && to == NodeRemoved:
	default:
		return fmt.Errorf("%w: node %s: %s -> %s (dead %v) is not a step of active -> draining -> removed", ErrInvalidArgument, c.GetNodeId(), from, to, c.GetDead())
	}
	return nil
}

// applySetNodeState moves a node one step along its life cycle. The
// proposer checked the same, but the registry may have moved since: the
// node must be registered and in the expected state, a dead flag is never
// cleared, and the last active node is never drained (nothing would be
// left to place the groups on).
func applySetNodeState(root *bolt.Bucket, nowMs int64, c *fsmpb.SetNodeState) error {
	if err := ValidateSetNodeState(c); err != nil {
		return reject(err)
	}
	nodes, err := readNodes(root)
	if err != nil {
		return err
	}
	var cur *Node
	active := 0
	for i, nd := range nodes {
		if nd.ID == c.GetNodeId() {
			cur = &nodes[i]
		}
		if nd.State == NodeActive {
			active++
		}
	}
	switch {
	case cur == nil:
		return reject(fmt.Errorf("%w: %w: %s", ErrNodeState, ErrUnknownNode, c.GetNodeId()))
	case cur.State != NodeState(c.GetExpectedState()):
		return reject(fmt.Errorf("%w: node %s is %s, not %s", ErrNodeState, cur.ID, cur.State, NodeState(c.GetExpectedState())))
	case cur.State == NodeActive && active <= 1:
		return reject(fmt.Errorf("%w: node %s is the last active node", ErrNodeState, cur.ID))
	}
	return putNodeRecord(root, &fsmpb.NodeRecord{
		NodeId: cur.ID, RaftAddr: cur.RaftAddr, GrpcAddr: cur.GRPCAddr, GossipAddr: cur.GossipAddr,
		State: c.GetState(), Dead: cur.Dead || c.GetDead(), StateSinceMs: nowMs,
	})
}
