package node

import (
	"context"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// reconcileLoop drives this node toward the shard map every
// ReconcileInterval, until Close.
func (n *Node) reconcileLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		n.reconcile()
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

// reconcile does one round: the meta leader writes the first map or a
// better placement; every node opens the groups assigned to it and closes
// the others; every data group leader changes its membership one step
// toward the map and hands leadership to the preferred replica.
func (n *Node) reconcile() {
	defer n.rounds.Add(1)
	if n.draining.Load() {
		return // stopping: leave the groups and their leadership alone
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	n.reconcileClusterID(ctx)
	if n.reconcileClusterVersion(ctx) {
		return // this binary is too old for the cluster: it stops
	}
	m, err := n.meta.fsm.ShardMap()
	if err != nil {
		n.log.Warn("read shard map", "err", err)
		return
	}
	if m == nil {
		if n.cfg.Shards > 0 && n.meta.isReadyLeader() {
			n.proposeInitialMap(ctx)
		}
		return
	}
	if old := n.smap.Swap(m); old == nil || old.Version != m.Version {
		n.log.Info("shard map", "version", m.Version, "groups", len(m.Groups))
	}
	if n.meta.isReadyLeader() {
		n.rebalance(ctx, m)
	}
	n.syncGroups(m)
	n.rebuildFenced()
	for _, g := range n.groupsSnapshot() {
		if g.Fenced() != "" && g.IsLeader() {
			n.handOverFenced(ctx, g)
			continue
		}
		// Groups the map moved away from this node are reconciled here too
		// while this node still leads them: it adds their new replicas, then
		// hands leadership over and is removed.
		if desired, ok := m.Group(g.id); ok && g.isReadyLeader() {
			n.reconcileRanges(ctx, g, m.Version, desired)
			n.reconcileGroupVersion(ctx, g)
			n.reconcileReplicas(ctx, g, desired)
			n.maybeCheckDigests(g)
		} else {
			delete(n.transfers, g.id) // not leading: nothing handed over is pending
		}
	}
}

// reconcileRanges tells a group's state machine the slots the map gives it,
// so it refuses appends routed with another map.
func (n *Node) reconcileRanges(ctx context.Context, g *Group, version uint64, desired shard.Group) {
	ranges, have, ok, err := g.fsm.OwnedRanges()
	if err != nil || (ok && (have >= version || slices.Equal(ranges, desired.Ranges))) {
		return
	}
	cmd := &fsmpb.SetRanges{MapVersion: version}
	for _, r := range desired.Ranges {
		cmd.Ranges = append(cmd.Ranges, &fsmpb.SlotRange{Start: r.Start, End: r.End})
	}
	if _, err := g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: cmd}}); err != nil {
		n.log.Warn("set ranges", "group", uint64(g.id), "err", err)
	}
}

func (n *Node) proposeInitialMap(ctx context.Context) {
	m, err := shard.Initial(n.cfg.Shards, n.cfg.NodeID, []string{n.cfg.NodeID})
	if err != nil {
		n.log.Error("initial shard map", "err", err)
		return
	}
	n.proposeMap(ctx, 0, m)
}

func (n *Node) proposeMap(ctx context.Context, expected uint64, m *shard.Map) {
	_, err := n.meta.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_SetShardMap{SetShardMap: &fsmpb.SetShardMap{
		ExpectedVersion: expected, Map: fsm.ShardMapToProto(m),
	}}})
	if err != nil {
		n.log.Warn("propose shard map", "version", m.Version, "err", err)
		return
	}
	n.log.Info("proposed shard map", "version", m.Version)
}

// rebalance drives node removals (driveNodeStates), then places the groups
// on the active registered members of the meta group and proposes the
// result when it differs from the current map.
func (n *Node) rebalance(ctx context.Context, m *shard.Map) {
	n.driveNodeStates(ctx, m)
	nodes, err := n.placementNodes()
	if err != nil {
		return
	}
	next, err := shard.Place(m, nodes)
	if err != nil {
		n.log.Warn("place groups", "err", err)
		return
	}
	if samePlacement(m, next) {
		return
	}
	n.proposeMap(ctx, m.Version, next)
}

// placementNodes are the nodes groups may be placed on: the meta group's
// active registered members.
func (n *Node) placementNodes() ([]string, error) {
	members, err := n.meta.Members()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, mb := range members {
		ids = append(ids, mb.ID)
	}
	return n.activeNodes(ids), nil
}

func samePlacement(a, b *shard.Map) bool {
	return slices.EqualFunc(a.Groups, b.Groups, func(x, y shard.Group) bool {
		return x.ID == y.ID && slices.Equal(x.Replicas, y.Replicas) && x.Pinned == y.Pinned
	})
}

// syncGroups opens the groups the map assigns to this node and closes the
// ones it no longer does once their leader has removed this node (their
// files stay on disk). A node removed from the cluster opens nothing: it
// stops (checkSelfRemoved).
func (n *Node) syncGroups(m *shard.Map) {
	if n.checkSelfRemoved() {
		return
	}
	want := map[shard.GroupID]shard.Group{}
	for _, id := range m.GroupsOn(n.cfg.NodeID) {
		want[id], _ = m.Group(id)
	}
	for id, sg := range want {
		if n.Group(id) != nil {
			continue
		}
		// Only the creator bootstraps, and only on an empty directory; other
		// replicas wait for the group's leader to add them.
		g, err := n.openGroup(id, sg.Creator == n.cfg.NodeID, nil)
		if err != nil {
			n.log.Error("open group", "group", uint64(id), "err", err)
			continue
		}
		n.mu.Lock()
		n.groups[id] = g
		n.mu.Unlock()
		n.log.Info("opened group", "group", uint64(id))
	}
	for _, g := range n.groupsSnapshot() {
		if _, ok := want[g.id]; ok {
			continue
		}
		// The map took the group from this node, but its replica stays up
		// until the group's leader has taken it out of the configuration:
		// closing earlier could leave the group without a quorum (or, for a
		// group this node alone held, without any replica at all).
		if n.inConfiguration(g) {
			continue
		}
		n.mu.Lock()
		delete(n.groups, g.id)
		n.mu.Unlock()
		if err := g.Close(); err != nil {
			n.log.Warn("close group", "group", uint64(g.id), "err", err)
		}
		n.log.Info("closed group", "group", uint64(g.id))
	}
}

// inConfiguration reports whether this node is still a server of the group's
// Raft configuration (true when that cannot be read: keep the replica).
func (n *Node) inConfiguration(g *Group) bool {
	cf, _, err := g.configuration()
	if err != nil {
		return true
	}
	return slices.ContainsFunc(cf.Servers, func(s raft.Server) bool { return string(s.ID) == n.cfg.NodeID })
}

// reconcileReplicas makes one membership change toward the map, in this
// order: add a missing replica as a non-voter; promote a caught-up
// non-voter; remove a replica the map dropped; hand leadership to the
// preferred replica once it has caught up. One change per round, each
// checked against the configuration index it was computed from.
func (n *Node) reconcileReplicas(ctx context.Context, g *Group, desired shard.Group) {
	cf, _, err := g.configuration()
	if err != nil {
		return
	}
	in := map[string]raft.Server{}
	for _, s := range cf.Servers {
		in[string(s.ID)] = s
	}
	if n.reconcileFenced(ctx, g, in) {
		return
	}
	for _, id := range desired.Replicas {
		if _, ok := in[id]; !ok {
			if nd, ok := n.nodeRecord(id); ok {
				n.logErr(g.addNonvoter(ctx, id, nd.RaftAddr))
			}
			return
		}
	}
	for _, s := range cf.Servers {
		if s.Suffrage != raft.Voter && slices.Contains(desired.Replicas, string(s.ID)) {
			if n.caughtUp(ctx, g, string(s.ID)) {
				n.logErr(g.promote(ctx, string(s.ID), string(s.Address)))
			}
			return
		}
	}
	for _, s := range cf.Servers {
		if slices.Contains(desired.Replicas, string(s.ID)) {
			continue
		}
		if string(s.ID) == n.cfg.NodeID {
			n.transferLeadership(ctx, g, desired.Replicas[0], in)
		} else {
			n.logErr(g.removeServer(ctx, string(s.ID)))
		}
		return
	}
	if pref := desired.Replicas[0]; pref != n.cfg.NodeID {
		n.transferLeadership(ctx, g, pref, in)
	}
}

// transferLeadership asks Raft to hand the group to a voter that has
// caught up. It does not wait for the outcome: Raft queues the request in a
// buffered channel and leaves it unanswered if it shuts down first; the next
// round sees whether leadership moved.
//
// While a transfer runs, Raft refuses writes to the group, so a transfer
// that keeps failing (a slow target, an election it cannot win) must not be
// retried at once: each request for a group waits twice as long as the one
// before, from transferBackoff up to transferBackoffMax, until this node no
// longer leads the group.
func (n *Node) transferLeadership(ctx context.Context, g *Group, to string, in map[string]raft.Server) {
	t := n.transfers[g.id]
	if time.Now().Before(t.next) {
		return
	}
	s, ok := in[to]
	if !ok || s.Suffrage != raft.Voter || !n.caughtUp(ctx, g, to) {
		return
	}
	g.raft.LeadershipTransferToServer(s.ID, s.Address)
	wait := min(transferBackoff<<min(t.tries, 10), transferBackoffMax)
	n.transfers[g.id] = transferState{tries: t.tries + 1, next: time.Now().Add(wait)}
	n.log.Info("asked to hand leadership over", "group", uint64(g.id), "to", to, "attempt", t.tries+1)
}

// Backoff of leadership hand-over requests for one group.
const (
	transferBackoff    = 2 * time.Second
	transferBackoffMax = 2 * time.Minute
)

// transferState is the hand-over history of a group this node leads; only
// the reconcile goroutine touches it.
type transferState struct {
	tries int
	next  time.Time
}

// caughtUp asks a replica how far it has applied; it has caught up when it
// is within CatchUpLag entries of this leader's commit index.
func (n *Node) caughtUp(ctx context.Context, g *Group, id string) bool {
	if n.cfg.Prober == nil {
		return false
	}
	addr := n.grpcAddrOf(id)
	if addr == "" {
		return false
	}
	applied, err := n.cfg.Prober(ctx, addr, g.id)
	if err != nil {
		return false
	}
	return applied+n.cfg.CatchUpLag >= g.raft.CommitIndex()
}

func (n *Node) logErr(err error) {
	if err != nil {
		n.log.Warn("reconcile", "err", err)
	}
}
