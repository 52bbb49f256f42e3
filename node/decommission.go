package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/durable"
	"github.com/syncstore/syncstore/shard"
)

const (
	// removedMarker, in a removed node's data dir, makes Start refuse it.
	removedMarker = "REMOVED"
	// RemovedStopWait bounds how long the meta leader waits for a live
	// removed node to see that it is removed (and stop itself) before it
	// takes the node out of the meta group anyway.
	RemovedStopWait = 30 * time.Second
	// refusalLogEvery: how often at most the dead node timeout logs that it
	// refuses to declare one node dead.
	refusalLogEvery = time.Minute
	// deadRetryEvery: how often the dead node timeout tries again to remove
	// a node it was refused (each try asks every node for its status).
	deadRetryEvery = 10 * time.Second
	// probeTimeout bounds the dead node timeout's probe of a node.
	probeTimeout = time.Second
)

// nodeOps is the meta leader's memory of node removals in progress; only
// the reconcile goroutine touches it, and a new leader term starts it
// afresh (what matters is in the meta state machine).
type nodeOps struct {
	term uint64
	// removedSeen: a removed node still in the meta configuration, with the
	// meta index it must reach to have seen its removal and when this
	// leader first saw it.
	removedSeen map[string]removalWait
	// unreachableSince: when this leader first found an active node
	// unreachable (for DeadNodeTimeout).
	unreachableSince map[string]time.Time
	// nextAttempt: when a refused dead removal may be tried again.
	nextAttempt      map[string]time.Time
	refusalLogged    map[string]time.Time
	metaHandoverNext time.Time
	// refill: a meta voter was removed; a non-voter is promoted in its
	// place once one has caught up (refillMetaVoters).
	refill bool
}

type removalWait struct {
	index uint64
	at    time.Time
}

// leaderOps returns the removal memory of this meta leader term.
func (n *Node) leaderOps() *nodeOps {
	term := n.meta.raft.CurrentTerm()
	if n.ops == nil || n.ops.term != term {
		n.ops = &nodeOps{term: term, removedSeen: map[string]removalWait{}, unreachableSince: map[string]time.Time{}, nextAttempt: map[string]time.Time{}, refusalLogged: map[string]time.Time{}}
	}
	return n.ops
}

// RemoveNode decides, on the meta leader, to decommission a node: it marks
// it draining (dead: gone for good, its replicas rebuilt from the others)
// and returns; placement then gives it nothing and the meta leader's
// reconcile rounds finish the removal (driveNodeStates). A node already
// draining or removed is answered with its record and already=true, except
// that a draining node may still be declared dead. It refuses to remove the
// last active node and, for a dead node, to leave a group without a quorum
// or with at most one copy (ErrWouldLoseQuorum, naming the groups).
func (n *Node) RemoveNode(ctx context.Context, id string, dead bool) (nd fsm.Node, already bool, err error) {
	if err := fsm.ValidateNodeID(id); err != nil {
		return fsm.Node{}, false, err
	}
	if !n.meta.IsLeader() {
		return fsm.Node{}, false, n.meta.notLeader()
	}
	if !n.meta.isReadyLeader() {
		return fsm.Node{}, false, ErrLeaderNotReady
	}
	nodes, err := n.meta.fsm.Nodes()
	if err != nil {
		return fsm.Node{}, false, err
	}
	i := slices.IndexFunc(nodes, func(o fsm.Node) bool { return o.ID == id })
	if i < 0 {
		return fsm.Node{}, false, fmt.Errorf("%w: %s is not registered", ErrUnknownNode, id)
	}
	rec := nodes[i]
	if rec.State == fsm.NodeRemoved || (rec.State == fsm.NodeDraining && (!dead || rec.Dead)) {
		return rec, true, nil
	}
	if rec.State == fsm.NodeActive && !slices.ContainsFunc(nodes, func(o fsm.Node) bool { return o.ID != id && o.State == fsm.NodeActive }) {
		return fsm.Node{}, false, fmt.Errorf("%w: %s is the only active node", ErrLastActiveNode, id)
	}
	if dead {
		m, err := n.meta.fsm.ShardMap()
		if err != nil {
			return fsm.Node{}, false, err
		}
		if m != nil {
			if err := checkDeadRemoval(id, nodes, m, n.gatherView(ctx, nodes)); err != nil {
				return fsm.Node{}, false, err
			}
		}
	}
	if err := n.setNodeState(ctx, rec, fsm.NodeDraining, dead); err != nil {
		return fsm.Node{}, false, err
	}
	rec.State, rec.Dead = fsm.NodeDraining, rec.Dead || dead
	n.log.Info("node removal started", "removed_node", id, "dead", rec.Dead)
	return rec, false, nil
}

func (n *Node) setNodeState(ctx context.Context, rec fsm.Node, to fsm.NodeState, dead bool) error {
	_, err := n.meta.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_SetNodeState{SetNodeState: &fsmpb.SetNodeState{
		NodeId: rec.ID, ExpectedState: fsmpb.NodeState(rec.State), State: fsmpb.NodeState(to), Dead: dead,
	}}})
	return err
}

// activeNodes lists the ids of the registered active nodes among ids.
func (n *Node) activeNodes(ids []string) []string {
	reg, err := n.registry()
	if err != nil {
		return nil
	}
	var out []string
	for _, id := range ids {
		if slices.ContainsFunc(reg, func(r fsm.Node) bool { return r.ID == id && r.State == fsm.NodeActive }) {
			out = append(out, id)
		}
	}
	return out
}

// driveNodeStates is the meta leader's part of node removal, once per
// reconcile round: it declares nodes dead after DeadNodeTimeout; marks a
// draining node removed once no map group lists it and no group's Raft
// configuration holds it (handing meta leadership away first if it is this
// node); and takes a removed node out of the meta configuration once it has
// seen its removal (or stopped, or RemovedStopWait passed; at once when it
// is dead).
func (n *Node) driveNodeStates(ctx context.Context, m *shard.Map) {
	ops := n.leaderOps()
	nodes, err := n.registry()
	if err != nil {
		return
	}
	n.watchDeadNodes(ctx, ops, nodes)
	var view *clusterView
	for _, nd := range nodes {
		switch nd.State {
		case fsm.NodeDraining:
			if len(m.GroupsOn(nd.ID)) > 0 {
				continue // placement is still moving its replicas
			}
			if view == nil {
				v := n.gatherView(ctx, nodes)
				view = &v
			}
			n.advanceDrain(ctx, ops, nd, m, *view)
		case fsm.NodeRemoved:
			n.finishRemoval(ctx, ops, nd)
		}
	}
	if ops.refill {
		ops.refill = n.refillMetaVoters(ctx)
	}
}

// advanceDrain marks a draining node removed once no group's configuration
// holds it, as every group's best-placed replica that answered sees it.
func (n *Node) advanceDrain(ctx context.Context, ops *nodeOps, nd fsm.Node, m *shard.Map, v clusterView) {
	if in := v.contains(nd.ID); len(in) > 0 {
		return // its replicas are still being taken out
	}
	for _, sg := range m.Groups {
		if _, ok := v.groups[sg.ID]; !ok {
			return // no replica of this group answered: it may still hold one
		}
	}
	if nd.ID == n.cfg.NodeID {
		n.handMetaAway(ops, "this node is being removed")
		return
	}
	if err := n.setNodeState(ctx, nd, fsm.NodeRemoved, nd.Dead); err != nil {
		n.log.Warn("mark node removed", "removed_node", nd.ID, "err", err)
		return
	}
	n.log.Info("node holds no replica any more: marked removed", "removed_node", nd.ID, "dead", nd.Dead)
}

// finishRemoval takes a removed node out of the meta configuration.
func (n *Node) finishRemoval(ctx context.Context, ops *nodeOps, nd fsm.Node) {
	cf, _, err := n.meta.configuration()
	if err != nil || !slices.ContainsFunc(cf.Servers, func(s raft.Server) bool { return string(s.ID) == nd.ID }) {
		delete(ops.removedSeen, nd.ID)
		return
	}
	if nd.ID == n.cfg.NodeID {
		n.handMetaAway(ops, "this node was removed")
		return
	}
	if !nd.Dead && n.cfg.Prober != nil {
		w, ok := ops.removedSeen[nd.ID]
		if !ok {
			w = removalWait{index: n.meta.fsm.AppliedIndex(), at: time.Now()}
			ops.removedSeen[nd.ID] = w
		}
		// A node that answers has not stopped; wait until it has applied
		// its removal (then it stops itself), within RemovedStopWait.
		applied, err := n.cfg.Prober(ctx, nd.GRPCAddr, shard.MetaGroup)
		if err == nil && applied < w.index && time.Since(w.at) < RemovedStopWait {
			return
		}
	}
	if err := n.meta.removeServer(ctx, nd.ID); err != nil {
		n.log.Warn("remove node from the meta group", "removed_node", nd.ID, "err", err)
		return
	}
	delete(ops.removedSeen, nd.ID)
	n.log.Info("node removed from the meta group", "removed_node", nd.ID)
	ops.refill = true
}

// refillMetaVoters promotes a caught-up active non-voter of the meta group
// while it has fewer than MaxMetaVoters voters (a removed voter leaves a
// seat). It reports whether a seat is still to fill with a non-voter that
// has not caught up yet.
func (n *Node) refillMetaVoters(ctx context.Context) (again bool) {
	cf, _, err := n.meta.configuration()
	if err != nil {
		return true
	}
	voters := 0
	for _, s := range cf.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	for _, s := range cf.Servers {
		if voters >= MaxMetaVoters {
			return false
		}
		nd, ok := n.nodeRecord(string(s.ID))
		if s.Suffrage == raft.Voter || !ok || nd.State != fsm.NodeActive {
			continue
		}
		if !n.caughtUp(ctx, n.meta, nd.ID) {
			again = true
			continue
		}
		if err := n.meta.promote(ctx, nd.ID, nd.RaftAddr); err != nil {
			n.log.Warn("promote meta non-voter", "id", nd.ID, "err", err)
			return true
		}
		n.log.Info("promoted a meta non-voter to fill a removed voter's seat", "id", nd.ID)
		voters++
	}
	return again
}

// handMetaAway asks Raft to hand meta leadership to another voter, at most
// every transferBackoff.
func (n *Node) handMetaAway(ops *nodeOps, why string) {
	if time.Now().Before(ops.metaHandoverNext) || !n.meta.hasOtherVoter() {
		return
	}
	ops.metaHandoverNext = time.Now().Add(transferBackoff)
	n.meta.raft.LeadershipTransfer() // not awaited: the next round sees the outcome
	n.log.Info("handing meta leadership over", "why", why)
}

// watchDeadNodes declares an active node dead once it has been unreachable
// (gossip does not say alive and it does not answer a probe: a node that
// has just joined may not be in gossip yet) for DeadNodeTimeout, with the
// refusals of RemoveNode(dead), which are logged.
func (n *Node) watchDeadNodes(ctx context.Context, ops *nodeOps, nodes []fsm.Node) {
	if n.cfg.DeadNodeTimeout <= 0 {
		return
	}
	health := map[string]string{}
	for _, gm := range n.gossip.Members() {
		health[gm.ID] = gm.Health
	}
	now := time.Now()
	for _, nd := range nodes {
		if nd.ID == n.cfg.NodeID || nd.State != fsm.NodeActive || health[nd.ID] == HealthAlive {
			delete(ops.unreachableSince, nd.ID)
			continue
		}
		// Probed when the clock would start and again before it strikes,
		// not every round: a probe of a black hole takes probeTimeout.
		since, ok := ops.unreachableSince[nd.ID]
		if !ok {
			if !n.answers(ctx, nd) {
				ops.unreachableSince[nd.ID] = now
			}
			continue
		}
		if now.Sub(since) < n.cfg.DeadNodeTimeout || now.Before(ops.nextAttempt[nd.ID]) {
			continue
		}
		if n.answers(ctx, nd) {
			delete(ops.unreachableSince, nd.ID)
			continue
		}
		ops.nextAttempt[nd.ID] = now.Add(deadRetryEvery)
		if _, _, err := n.RemoveNode(ctx, nd.ID, true); err != nil {
			if now.After(ops.refusalLogged[nd.ID]) {
				ops.refusalLogged[nd.ID] = now.Add(refusalLogEvery)
				n.log.Warn("dead node timeout: not removing the node", "dead_node", nd.ID, "unreachable_for", now.Sub(since).Round(time.Second), "err", err)
			}
			continue
		}
		delete(ops.unreachableSince, nd.ID)
		n.log.Warn("dead node timeout: node declared dead, its replicas are rebuilt elsewhere", "dead_node", nd.ID, "unreachable_for", now.Sub(since).Round(time.Second))
	}
}

// checkSelfRemoved, on every node each round: once its meta replica says
// this node is removed, it marks its data dir, stops acting and answering
// status (as when draining) and closes Removed(), so syncd stops it. It
// reports whether the node is removed.
func (n *Node) checkSelfRemoved() bool {
	select {
	case <-n.removed:
		return true
	default:
	}
	reg, err := n.registry()
	if err != nil {
		return false
	}
	i := slices.IndexFunc(reg, func(r fsm.Node) bool { return r.ID == n.cfg.NodeID })
	if i < 0 || reg[i].State != fsm.NodeRemoved {
		return false
	}
	nd := reg[i]
	msg := fmt.Sprintf("node %s was removed from the cluster at %s (seen %s); this data dir must not be used again: "+
		"wipe it (or use another) to join again under this id\n", nd.ID, time.UnixMilli(nd.StateSinceMs).UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
	if err := durable.WriteFile(filepath.Join(n.cfg.DataDir, removedMarker), []byte(msg)); err != nil {
		n.log.Error("write removal marker", "err", err)
	}
	n.draining.Store(true)
	if n.meta.IsLeader() {
		n.meta.raft.LeadershipTransfer()
	}
	n.log.Warn("this node was removed from the cluster: stopping", "dead", nd.Dead)
	n.removedOnce.Do(func() { close(n.removed) })
	return true
}

// Removed is closed once this node has found itself removed from the
// cluster; the process should then stop (syncd does, and exits cleanly).
func (n *Node) Removed() <-chan struct{} { return n.removed }

// checkRemovedMarker refuses a data dir whose node was removed.
func checkRemovedMarker(dataDir string) error {
	b, err := os.ReadFile(filepath.Join(dataDir, removedMarker))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("node: read %s: %w", removedMarker, err)
	}
	return fmt.Errorf("%w: %s: %s", ErrRemoved, dataDir, strings.TrimSpace(string(b)))
}

// answers reports whether the node answers a status probe now.
func (n *Node) answers(ctx context.Context, nd fsm.Node) bool {
	if n.cfg.Prober == nil || nd.GRPCAddr == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err := n.cfg.Prober(ctx, nd.GRPCAddr, shard.MetaGroup)
	return err == nil
}
