package node

import (
	"errors"

	"github.com/syncstore/syncstore/fsm"
)

// Sentinel errors of node removal and operator moves; the rpc layer maps
// each to a gRPC code (rpc/server/errors.go).
var (
	// ErrUnknownNode: the node id is not registered.
	ErrUnknownNode = fsm.ErrUnknownNode
	// ErrLastActiveNode: removing the node would leave no active node to
	// place the groups on.
	ErrLastActiveNode = errors.New("node: the last active node cannot be removed")
	// ErrWouldLoseQuorum: declaring a node dead would leave a group without
	// a quorum or with at most one copy; the message names the groups.
	ErrWouldLoseQuorum = errors.New("node: a group would lose its quorum or its last copy")
	// ErrNodeNotActive: an operator move names a node that is draining or
	// removed.
	ErrNodeNotActive = errors.New("node: node is not active")
	// ErrBadMove: an operator move that does not fit the group (the target
	// is already a replica, the source is not one).
	ErrBadMove = errors.New("node: move does not fit the group")
	// ErrRemoved: this node was removed from the cluster; its data dir is
	// marked and refused at start.
	ErrRemoved = errors.New("node: this node was removed from the cluster")
)
