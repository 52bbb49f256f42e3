package node

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// operatorCASAttempts bounds how often an operator change re-reads the map
// when another proposer (the rebalance) changed it in between.
const operatorCASAttempts = 5

// TransferLeader makes to the preferred leader of a group: first in its
// replicas, the group pinned so that placement keeps it. The group's leader
// then hands leadership over (reconcileReplicas). to must be an active node
// holding a replica of the group. It returns the group as written (or as
// found, changed false, when it already matched).
func (n *Node) TransferLeader(ctx context.Context, group shard.GroupID, to string) (shard.Group, uint64, bool, error) {
	return n.changeGroup(ctx, group, func(g shard.Group) ([]string, error) {
		if err := n.checkActive(to); err != nil {
			return nil, err
		}
		i := slices.Index(g.Replicas, to)
		if i < 0 {
			return nil, fmt.Errorf("%w: %s holds no replica of group %d (replicas %v): move one there first", ErrBadMove, to, g.ID, g.Replicas)
		}
		reps := slices.Clone(g.Replicas)
		reps[0], reps[i] = reps[i], reps[0]
		return reps, nil
	})
}

// MoveReplica replaces from with to among a group's replicas (same
// position, the group pinned). The group's leader then adds to as a
// non-voter, promotes it once caught up and removes from. to must be an
// active node that holds no replica of the group; from must hold one.
func (n *Node) MoveReplica(ctx context.Context, group shard.GroupID, from, to string) (shard.Group, uint64, bool, error) {
	if err := fsm.ValidateNodeID(from); err != nil {
		return shard.Group{}, 0, false, err
	}
	if from == to {
		return shard.Group{}, 0, false, fmt.Errorf("%w: --from and --to are both %s", fsm.ErrInvalidArgument, from)
	}
	return n.changeGroup(ctx, group, func(g shard.Group) ([]string, error) {
		if err := n.checkActive(to); err != nil {
			return nil, err
		}
		if slices.Contains(g.Replicas, to) {
			return nil, fmt.Errorf("%w: %s already holds a replica of group %d (replicas %v)", ErrBadMove, to, g.ID, g.Replicas)
		}
		i := slices.Index(g.Replicas, from)
		if i < 0 {
			if _, ok := n.nodeRecord(from); !ok {
				return nil, fmt.Errorf("%w: %s is not registered", ErrUnknownNode, from)
			}
			return nil, fmt.Errorf("%w: %s holds no replica of group %d (replicas %v)", ErrBadMove, from, g.ID, g.Replicas)
		}
		reps := slices.Clone(g.Replicas)
		reps[i] = to
		return reps, nil
	})
}

// checkActive requires a registered active node.
func (n *Node) checkActive(id string) error {
	if err := fsm.ValidateNodeID(id); err != nil {
		return err
	}
	reg, err := n.registry()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(reg, func(r fsm.Node) bool { return r.ID == id })
	switch {
	case i < 0:
		return fmt.Errorf("%w: %s is not registered", ErrUnknownNode, id)
	case reg[i].State != fsm.NodeActive:
		return fmt.Errorf("%w: %s is %s", ErrNodeNotActive, id, reg[i].State)
	}
	return nil
}

// changeGroup is a compare-and-set of one group's replicas in the shard
// map, on the meta leader: edit computes the new replicas from the group as
// it stands (or refuses, changing nothing), and the group is pinned. A map
// another proposer changed in between is read again, up to
// operatorCASAttempts times.
func (n *Node) changeGroup(ctx context.Context, id shard.GroupID, edit func(shard.Group) ([]string, error)) (shard.Group, uint64, bool, error) {
	if id == shard.MetaGroup {
		return shard.Group{}, 0, false, fmt.Errorf("%w: the meta group's members are every node; it has no replicas to move", fsm.ErrInvalidArgument)
	}
	for attempt := 0; ; attempt++ {
		if !n.meta.IsLeader() {
			return shard.Group{}, 0, false, n.meta.notLeader()
		}
		if !n.meta.isReadyLeader() {
			return shard.Group{}, 0, false, ErrLeaderNotReady
		}
		m, err := n.meta.fsm.ShardMap()
		if err != nil {
			return shard.Group{}, 0, false, err
		}
		if m == nil {
			return shard.Group{}, 0, false, ErrNoShardMap
		}
		g, ok := m.Group(id)
		if !ok {
			return shard.Group{}, 0, false, fmt.Errorf("%w: group %d is not in shard map v%d", ErrUnknownGroup, id, m.Version)
		}
		reps, err := edit(g)
		if err != nil {
			return shard.Group{}, 0, false, err
		}
		if g.Pinned && slices.Equal(reps, g.Replicas) {
			return g, m.Version, false, nil
		}
		groups := slices.Clone(m.Groups)
		for i := range groups {
			if groups[i].ID == id {
				groups[i].Replicas, groups[i].Pinned = reps, true
				g = groups[i]
			}
		}
		next, err := shard.New(m.Version+1, groups)
		if err != nil {
			return shard.Group{}, 0, false, fmt.Errorf("%w: %v", fsm.ErrInvalidArgument, err)
		}
		err = n.casMap(ctx, m.Version, next)
		if errors.Is(err, fsm.ErrVersionConflict) && attempt+1 < operatorCASAttempts {
			continue
		}
		if err != nil {
			return shard.Group{}, 0, false, err
		}
		n.log.Info("operator changed a group", "group", uint64(id), "replicas", reps, "map_version", next.Version)
		return g, next.Version, true, nil
	}
}

// casMap proposes m if the stored map is still at version expected.
func (n *Node) casMap(ctx context.Context, expected uint64, m *shard.Map) error {
	_, err := n.meta.propose(ctx, setShardMapCmd(expected, m))
	return err
}

func setShardMapCmd(expected uint64, m *shard.Map) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_SetShardMap{SetShardMap: &fsmpb.SetShardMap{
		ExpectedVersion: expected, Map: fsm.ShardMapToProto(m),
	}}}
}

// NodeRecords is the node registry as this node's meta replica holds it.
func (n *Node) NodeRecords() ([]fsm.Node, error) { return n.meta.fsm.Nodes() }
