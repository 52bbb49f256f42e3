package fsm

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// Node is a registered cluster member.
type Node struct {
	ID         string
	RaftAddr   string
	GRPCAddr   string
	GossipAddr string
	// State is where the node is in its life cycle (NodeActive for records
	// written before states existed); Dead says it was declared gone for
	// good; StateSinceMs is when the state was set (0: never).
	State        NodeState
	Dead         bool
	StateSinceMs int64
}

// SameAddrs reports whether o is nd's id at nd's addresses.
func (nd Node) SameAddrs(o Node) bool {
	return nd.ID == o.ID && nd.RaftAddr == o.RaftAddr && nd.GRPCAddr == o.GRPCAddr && nd.GossipAddr == o.GossipAddr
}

// Nodes lists the registered members, ordered by id.
func (f *FSM) Nodes() ([]Node, error) {
	var nodes []Node
	err := f.view(func(root *bolt.Bucket) (err error) {
		nodes, err = readNodes(root)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: nodes: %w", err)
	}
	return nodes, nil
}

func readNodes(root *bolt.Bucket) ([]Node, error) {
	var nodes []Node
	err := root.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
		var rec fsmpb.NodeRecord
		v, err := unseal(k, v)
		if err != nil {
			return err
		}
		if err := proto.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode node record %q: %w", k, err)
		}
		nodes = append(nodes, Node{ID: rec.GetNodeId(), RaftAddr: rec.GetRaftAddr(), GRPCAddr: rec.GetGrpcAddr(), GossipAddr: rec.GetGossipAddr(),
			State: NodeState(rec.GetState()), Dead: rec.GetDead(), StateSinceMs: rec.GetStateSinceMs()})
		return nil
	})
	return nodes, err
}

// RaftIdentityConflict says whether nd may be registered next to the
// registered node o. A node's Raft address is its identity to its peers, so
// a registered id is never re-pointed to another Raft address and no two ids
// share one: either would let one process stand for two servers (and count
// twice in a vote). The error wraps ErrNodeConflict.
func RaftIdentityConflict(o, nd Node) error {
	switch {
	case o.ID == nd.ID && o.RaftAddr != nd.RaftAddr:
		return fmt.Errorf("%w: node %s is registered at raft address %s, not %s", ErrNodeConflict, o.ID, o.RaftAddr, nd.RaftAddr)
	case o.ID != nd.ID && o.RaftAddr == nd.RaftAddr:
		return fmt.Errorf("%w: raft address %s belongs to node %s", ErrNodeConflict, nd.RaftAddr, o.ID)
	}
	return nil
}

// applyRegisterNode records a node's addresses, refusing a Raft identity
// conflict (RaftIdentityConflict) with a node that is not removed. Its gRPC
// and gossip addresses may change (a restart on another port); its state
// stays, except that a removed node registering again (a fresh data dir
// under the old id) is active again.
func applyRegisterNode(root *bolt.Bucket, nowMs int64, r *fsmpb.RegisterNode) error {
	if err := ValidateRegisterNode(r); err != nil {
		return reject(err)
	}
	nodes, err := readNodes(root)
	if err != nil {
		return err
	}
	nd := Node{ID: r.GetNodeId(), RaftAddr: r.GetRaftAddr(), GRPCAddr: r.GetGrpcAddr(), GossipAddr: r.GetGossipAddr()}
	for _, o := range nodes {
		if o.State == NodeRemoved {
			continue // out of every configuration: its id and addresses are free
		}
		if err := RaftIdentityConflict(o, nd); err != nil {
			return reject(err)
		}
	}
	rec := &fsmpb.NodeRecord{NodeId: nd.ID, RaftAddr: nd.RaftAddr, GrpcAddr: nd.GRPCAddr, GossipAddr: nd.GossipAddr}
	for _, o := range nodes {
		switch {
		case o.ID != nd.ID:
		case o.State == NodeRemoved:
			rec.StateSinceMs = nowMs // back as a new member: active
		default:
			rec.State, rec.Dead, rec.StateSinceMs = fsmpb.NodeState(o.State), o.Dead, o.StateSinceMs
		}
	}
	return putNodeRecord(root, rec)
}

func putNodeRecord(root *bolt.Bucket, rec *fsmpb.NodeRecord) error {
	v, err := stored.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode node record: %w", err)
	}
	return sealed{root.Bucket(bucketNodes)}.Put([]byte(rec.GetNodeId()), v)
}
