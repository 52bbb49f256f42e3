package fsm

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// ErrMoveInBackup marks a meta state, restored from a backup, that records
// a slot move still under way. Its groups were cut at different indexes,
// so the move's source and target may disagree on where it stood; such a
// backup is not restored (syncctl backup refuses to take one).
var ErrMoveInBackup = errors.New("fsm: the backup holds a slot move under way")

// RebaseRestoredMeta turns a meta group's state, restored from a backup of
// another cluster, into the state of a new one-node cluster run by self:
// the node registry holds only self (active); every group of the shard
// map has self as its only replica and creator and is no longer pinned
// (the operator's choices named nodes of the old cluster); the map's
// version grows by one so that clients holding the old map refresh it.
// Finished moves stay as history; a move under way is refused
// (ErrMoveInBackup). The cluster id is left as it was: the new cluster's
// lone voter replaces it (node/clusterid.go).
//
// It writes the state directly, outside Raft: a restore runs before the
// group's Raft starts, and its result reaches other replicas as a
// snapshot. The applied index is unchanged.
func (f *FSM) RebaseRestoredMeta(nowMs int64, self Node) error {
	if err := ValidateRegisterNode(&fsmpb.RegisterNode{NodeId: self.ID, RaftAddr: self.RaftAddr, GrpcAddr: self.GRPCAddr, GossipAddr: self.GossipAddr}); err != nil {
		return fmt.Errorf("fsm: rebase restored meta: %w", err)
	}
	err := f.st.Update(func(root *bolt.Bucket) error {
		recs, err := readMoveRecords(root)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if !MoveFinal(rec.GetPhase()) {
				return fmt.Errorf("%w: move %d of slots to group %d is %s", ErrMoveInBackup, rec.GetId(), rec.GetTarget(), PhaseName(rec.GetPhase()))
			}
		}
		if err := rebaseShardMap(root, self.ID); err != nil {
			return err
		}
		return resetNodes(root, nowMs, self)
	})
	if err != nil {
		return fmt.Errorf("fsm: rebase restored meta: %w", err)
	}
	return nil
}

func rebaseShardMap(root *bolt.Bucket, self string) error {
	m, err := readStoredShardMap(root)
	if err != nil {
		return err
	}
	if m == nil {
		return errors.New("the meta state holds no shard map: not a backup of a running cluster")
	}
	groups := make([]shard.Group, len(m.Groups))
	for i, g := range m.Groups {
		g.Replicas, g.Creator, g.Pinned = []string{self}, self, false
		groups[i] = g
	}
	rebased, err := shard.New(m.Version+1, groups)
	if err != nil {
		return fmt.Errorf("rebased shard map: %w", err)
	}
	v, err := stored.Marshal(ShardMapToProto(rebased))
	if err != nil {
		return fmt.Errorf("encode shard map: %w", err)
	}
	return sealed{root.Bucket(bucketShardMap)}.Put(keyShardMap, v)
}

func resetNodes(root *bolt.Bucket, nowMs int64, self Node) error {
	if err := root.DeleteBucket(bucketNodes); err != nil {
		return fmt.Errorf("clear node registry: %w", err)
	}
	if _, err := root.CreateBucket(bucketNodes); err != nil {
		return fmt.Errorf("clear node registry: %w", err)
	}
	return putNodeRecord(root, &fsmpb.NodeRecord{NodeId: self.ID, RaftAddr: self.RaftAddr, GrpcAddr: self.GRPCAddr,
		GossipAddr: self.GossipAddr, StateSinceMs: nowMs})
}
