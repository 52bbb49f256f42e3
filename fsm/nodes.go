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
}

// Nodes lists the registered members, ordered by id.
func (f *FSM) Nodes() ([]Node, error) {
	var nodes []Node
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNodes).ForEach(func(_, v []byte) error {
			var rec fsmpb.NodeRecord
			if err := proto.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode node record: %w", err)
			}
			nodes = append(nodes, Node{ID: rec.GetNodeId(), RaftAddr: rec.GetRaftAddr(), GRPCAddr: rec.GetGrpcAddr(), GossipAddr: rec.GetGossipAddr()})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: nodes: %w", err)
	}
	return nodes, nil
}
