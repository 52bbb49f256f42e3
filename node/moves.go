package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/node/mover"
	"github.com/syncstore/syncstore/shard"
)

// Slot moves (node/mover drives them on the meta leader; fsm/move*.go
// holds their state). This file is the node's side: the operator's calls
// and what the mover needs of the node.

// PlanMove records a move of ranges to the target group, on the meta
// leader; the mover starts it at once. It returns the move's id.
func (n *Node) PlanMove(ctx context.Context, ranges []shard.Range, target shard.GroupID, reason string) (uint64, error) {
	c := &fsmpb.MovePlan{Ranges: fsm.RangesToProto(ranges), Target: uint64(target), Reason: reason}
	if err := fsm.ValidateMovePlan(c); err != nil {
		return 0, err
	}
	if !n.meta.IsLeader() {
		return 0, n.meta.notLeader()
	}
	// Refuse here what the state machine would refuse, without a log entry.
	m, err := n.meta.fsm.ShardMap()
	if err != nil {
		return 0, err
	}
	recs, err := n.meta.fsm.Moves()
	if err != nil {
		return 0, err
	}
	if _, err := fsm.CheckMovePlan(m, recs, c); err != nil {
		return 0, err
	}
	res, err := n.meta.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_MovePlan{MovePlan: c}})
	if err != nil {
		return 0, err
	}
	n.log.Info("move planned", "id", res.MoveID, "ranges", ranges, "target", uint64(target), "reason", reason)
	n.mover.Kick()
	return res.MoveID, nil
}

// AbortMove asks for a move to be stopped before its switch, on the meta
// leader; the mover undoes it.
func (n *Node) AbortMove(ctx context.Context, id uint64) error {
	if !n.meta.IsLeader() {
		return n.meta.notLeader()
	}
	recs, err := n.meta.fsm.Moves()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(recs, func(r *fsmpb.MoveRecord) bool { return r.GetId() == id })
	switch {
	case i < 0:
		return fmt.Errorf("%w: %d", fsm.ErrUnknownMove, id)
	case recs[i].GetPhase() == fsmpb.MovePhase_SWITCHED || fsm.MoveFinal(recs[i].GetPhase()):
		return fmt.Errorf("%w: move %d is %s; only a move before its switch can be aborted", fsm.ErrMoveConflict, id, fsm.PhaseName(recs[i].GetPhase()))
	}
	if _, err := n.meta.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_MoveUpdate{MoveUpdate: &fsmpb.MoveUpdate{Id: id, Abort: true}}}); err != nil {
		return err
	}
	n.mover.Kick()
	return nil
}

// Moves lists the moves this node's meta replica knows, by id.
func (n *Node) Moves() ([]*fsmpb.MoveRecord, error) { return n.meta.fsm.Moves() }

// refreshShardMap takes the meta replica's map if it is newer than the
// one routing uses: called when a group refused a request routed with an
// older map, so the retry routes with the new one without waiting for the
// next reconcile round.
func (n *Node) refreshShardMap() {
	m, err := n.meta.fsm.ShardMap()
	if err != nil || m == nil {
		return
	}
	for {
		old := n.smap.Load()
		if old != nil && old.Version >= m.Version {
			return
		}
		if n.smap.CompareAndSwap(old, m) {
			return
		}
	}
}

// moverCluster is the node as its mover sees it.
type moverCluster struct{ n *Node }

func (c moverCluster) MetaLeader() bool { return c.n.meta.isReadyLeader() && !c.n.draining.Load() }

func (c moverCluster) Moves() ([]*fsmpb.MoveRecord, error) { return c.n.meta.fsm.Moves() }

func (c moverCluster) ProposeMeta(ctx context.Context, cmd *fsmpb.Command) (*fsm.Result, error) {
	res, err := c.n.meta.propose(ctx, cmd)
	if err == nil {
		if _, ok := cmd.GetOp().(*fsmpb.Command_MoveSwitch); ok {
			c.n.refreshShardMap()
		}
	}
	return res, err
}

func (c moverCluster) Step(ctx context.Context, group shard.GroupID, step *fsmpb.MoveStep) (*fsmpb.MoveStepResult, error) {
	res, err := c.n.moveStepAt(ctx, group, step)
	if err != nil {
		return nil, fmt.Errorf("group %d: %w", group, err)
	}
	return res, nil
}

func (c moverCluster) Ranges(group shard.GroupID) ([]shard.Range, uint64, bool) {
	m, err := c.n.meta.fsm.ShardMap()
	if err != nil || m == nil {
		return nil, 0, false
	}
	g, ok := m.Group(group)
	return g.Ranges, m.Version, ok
}

// moverLoop runs the mover until Close.
func (n *Node) moverLoop() {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-n.stop
		cancel()
	}()
	n.mover.Run(ctx, n.cfg.ReconcileInterval)
}

func newMover(n *Node) *mover.Mover {
	cfg := mover.DefaultConfig()
	if n.cfg.MoveChunkBytes > 0 {
		cfg.ChunkBytes = n.cfg.MoveChunkBytes
	}
	cfg.Logger = n.log.With("component", "mover")
	cfg.OnChunk = n.cfg.OnMoveChunk
	cfg.Observe = func(id uint64, fenced time.Duration) {
		n.log.Info("move switched", "id", id, "fenced_for", fenced)
	}
	return mover.New(moverCluster{n}, cfg)
}

// MaxAddGroups bounds the groups one AddGroups creates.
const MaxAddGroups = 64

// AddGroups creates count groups that own no slots yet, on the meta
// leader (a compare-and-set of the shard map); moves give them slots.
func (n *Node) AddGroups(ctx context.Context, count int) ([]shard.GroupID, error) {
	if count < 1 || count > MaxAddGroups {
		return nil, fmt.Errorf("%w: add %d groups: want 1..%d at a time", fsm.ErrInvalidArgument, count, MaxAddGroups)
	}
	if !n.meta.IsLeader() {
		return nil, n.meta.notLeader()
	}
	m, err := n.meta.fsm.ShardMap()
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, ErrNoShardMap
	}
	nodes, err := n.placementNodes()
	if err != nil {
		return nil, err
	}
	next, ids, err := shard.WithNewGroups(m, count, nodes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", fsm.ErrInvalidArgument, err)
	}
	if err := n.casMap(ctx, m.Version, next); err != nil {
		return nil, err
	}
	n.refreshShardMap()
	n.log.Info("added groups", "groups", ids, "map_version", next.Version)
	return ids, nil
}

// planMoves plans each move; it stops at the first refused.
func (n *Node) planMoves(ctx context.Context, moves []shard.Move, reason string) ([]uint64, error) {
	var ids []uint64
	for _, mv := range moves {
		id, err := n.PlanMove(ctx, mv.Ranges, mv.To, reason)
		if err != nil {
			return ids, fmt.Errorf("plan move of %v from group %d to %d: %w", mv.Ranges, mv.From, mv.To, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// SplitGroup creates a group and moves the upper half of group's slots to
// it, on the meta leader. It returns the new group and the moves.
func (n *Node) SplitGroup(ctx context.Context, group shard.GroupID) (shard.GroupID, []uint64, error) {
	m := n.shardMap()
	if m == nil {
		return 0, nil, ErrNoShardMap
	}
	if _, err := shard.SplitPlan(m, group, group); err != nil { // refuse before creating anything
		return 0, nil, fmt.Errorf("%w: %v", fsm.ErrInvalidArgument, err)
	}
	ids, err := n.AddGroups(ctx, 1)
	if err != nil {
		return 0, nil, err
	}
	moves, err := shard.SplitPlan(n.shardMap(), group, ids[0])
	if err != nil {
		return ids[0], nil, fmt.Errorf("%w: %v", fsm.ErrInvalidArgument, err)
	}
	planned, err := n.planMoves(ctx, moves, fmt.Sprintf("split of group %d", group))
	return ids[0], planned, err
}

// RebalanceSlots evens the cluster out, on the meta leader: it unpins the
// groups operators placed, so placement spreads replicas and preferred
// leaders evenly again, and plans the moves that give every group an even
// share of the slots. With moves under way it does nothing (they would
// overlap what it computes).
func (n *Node) RebalanceSlots(ctx context.Context, reason string) ([]uint64, error) {
	if !n.meta.IsLeader() {
		return nil, n.meta.notLeader()
	}
	recs, err := n.meta.fsm.Moves()
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if !fsm.MoveFinal(r.GetPhase()) {
			return nil, fmt.Errorf("%w: move %d is under way; rebalance once it is done", fsm.ErrMoveConflict, r.GetId())
		}
	}
	m, err := n.meta.fsm.ShardMap()
	if err != nil || m == nil {
		return nil, ErrNoShardMap
	}
	if err := n.unpinAll(ctx, m); err != nil {
		return nil, err
	}
	return n.planMoves(ctx, shard.EvenPlan(m), reason)
}

// unpinAll lets placement even replicas and preferred leaders out again
// over every group an operator pinned (a compare-and-set of the map; the
// reconciler then moves what balance needs).
func (n *Node) unpinAll(ctx context.Context, m *shard.Map) error {
	groups := slices.Clone(m.Groups)
	pinned := false
	for i := range groups {
		pinned = pinned || groups[i].Pinned
		groups[i].Pinned = false
	}
	if !pinned {
		return nil
	}
	next, err := shard.New(m.Version+1, groups)
	if err != nil {
		return err
	}
	if err := n.casMap(ctx, m.Version, next); err != nil {
		return fmt.Errorf("unpin groups: %w", err)
	}
	n.log.Info("unpinned every group: placement evens replicas and leaders again", "map_version", next.Version)
	return nil
}
