package node

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// drainProbeTimeout bounds one probe of a hand-over candidate: a peer
	// cut off by the network answers nothing, and the drain has other
	// voters to try.
	drainProbeTimeout = time.Second
	// drainRetry is how long a group waits before looking for a target
	// again, when its live voters are behind or refused the hand-over.
	drainRetry = 100 * time.Millisecond
)

// Drain prepares a clean stop. The node stops acting on the shard map and
// reports itself draining (so peers' probes fail and no leadership is
// handed back to it), then hands every group it leads to a live voter that
// has caught up, and waits, up to ctx, until it leads none that has one.
// Without it a stopped leader's groups wait an election timeout, and its
// clients a retry, before they are served again.
//
// The target is chosen, not left to Raft: an untargeted transfer goes to
// the voter with the highest match index, which after a rolling stop is
// the node stopped a moment ago (it was caught up when it stopped); the
// transfer then fails and the drain waited out its whole deadline. A group
// whose other voters are all down or stopping stays led here, and the log
// says so and why.
func (n *Node) Drain(ctx context.Context) error {
	n.draining.Store(true)
	// Only groups with another voter can hand leadership over; a group this
	// node alone holds keeps it until it stops.
	var groups []*Group
	for _, g := range append([]*Group{n.meta}, n.groupsSnapshot()...) {
		if g.hasOtherVoter() {
			groups = append(groups, g)
		}
	}
	// kept: the groups that have no live voter to take them, and why.
	kept := map[*Group]string{}
	var mu sync.Mutex
	for {
		var pending []*Group
		for _, g := range groups {
			if _, ok := kept[g]; !ok && g.IsLeader() {
				pending = append(pending, g)
			}
		}
		if len(pending) == 0 {
			var ids []uint64
			for g := range kept {
				ids = append(ids, uint64(g.id))
			}
			slices.Sort(ids)
			n.log.Info("drained: leads no group that has another live voter", "kept", ids)
			return nil
		}
		if err := ctx.Err(); err != nil {
			var ids []uint64
			for _, g := range pending {
				ids = append(ids, uint64(g.id))
			}
			return fmt.Errorf("node: drain: still leading %d groups %v: %w", len(pending), ids, err)
		}
		var wg sync.WaitGroup
		for _, g := range pending {
			wg.Go(func() {
				if why := n.handOver(ctx, g); why != "" {
					mu.Lock()
					kept[g] = why
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
}

// handOver hands a group this node leads to a live, caught-up voter,
// trying the next one when a transfer fails, until the group is led
// elsewhere or ctx ends. It returns why the group stays here when no other
// voter is alive, "" otherwise.
func (n *Node) handOver(ctx context.Context, g *Group) string {
	waitLogged := false
	for g.IsLeader() {
		targets, why, live := n.handOverTargets(ctx, g)
		if !live {
			n.log.Warn("drain: no live voter to hand the group to; it stays led here until the node stops", "group", uint64(g.id), "voters", why)
			return why
		}
		for _, to := range targets {
			err := g.TransferLeadership(ctx, to)
			if err == nil || !g.IsLeader() {
				n.log.Info("drain: handed leadership over", "group", uint64(g.id), "to", to)
				return ""
			}
			if ctx.Err() != nil {
				return ""
			}
			n.log.Info("drain: hand-over refused, trying another voter", "group", uint64(g.id), "to", to, "err", err)
		}
		if len(targets) == 0 && !waitLogged {
			n.log.Info("drain: no live voter has caught up yet; waiting", "group", uint64(g.id), "voters", why)
			waitLogged = true
		}
		t := time.NewTimer(drainRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return ""
		case <-t.C:
		}
	}
	return ""
}

// handOverTargets lists the voters of g that may take its leadership,
// most caught up first: alive (gossip has not declared them dead or gone,
// this leader's heartbeats reach them, and they answer a probe, which a
// draining node refuses) and within CatchUpLag of the commit index. why
// says what disqualified each of the others; live reports whether any
// other voter is alive at all.
func (n *Node) handOverTargets(ctx context.Context, g *Group) (targets []string, why string, live bool) {
	cf, _, err := g.configuration()
	if err != nil {
		return nil, err.Error(), true // Raft is busy or closing: look again
	}
	health := map[string]string{}
	for _, m := range n.gossip.Members() {
		health[m.ID] = m.Health
	}
	commit := g.raft.CommitIndex()
	type candidate struct {
		id      string
		applied uint64
	}
	var cands []candidate
	var reasons []string
	for _, s := range cf.Servers {
		id := string(s.ID)
		if s.Suffrage != raft.Voter || id == n.cfg.NodeID {
			continue
		}
		if h := health[id]; gossipDown(h) {
			reasons = append(reasons, id+": gossip says "+h)
			continue
		}
		if f, ok := n.peers.raftFailure(g, id); ok {
			reasons = append(reasons, fmt.Sprintf("%s: heartbeats fail, last reached %s ago", id, time.Since(f.since).Round(time.Millisecond)))
			continue
		}
		applied, known, err := n.probeApplied(ctx, g, id)
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", id, err)) // the Prober says "probe ADDR: ..."
			continue
		}
		live = true
		if known && applied+n.cfg.CatchUpLag < commit {
			reasons = append(reasons, fmt.Sprintf("%s: applied %d of %d", id, applied, commit))
			continue
		}
		cands = append(cands, candidate{id, applied})
	}
	slices.SortStableFunc(cands, func(a, b candidate) int { return cmp.Compare(b.applied, a.applied) })
	for _, c := range cands {
		targets = append(targets, c.id)
	}
	return targets, strings.Join(reasons, "; "), live
}

// probeApplied asks a voter how far it has applied g. Without a Prober
// (a node wired without the rpc layer) nothing is known and Raft's own
// transfer is trusted to catch the target up.
func (n *Node) probeApplied(ctx context.Context, g *Group, id string) (applied uint64, known bool, err error) {
	if n.cfg.Prober == nil {
		return 0, false, nil
	}
	addr := n.grpcAddrOf(id)
	if addr == "" {
		return 0, false, fmt.Errorf("no gRPC address registered")
	}
	ctx, cancel := context.WithTimeout(ctx, drainProbeTimeout)
	defer cancel()
	applied, err = n.cfg.Prober(ctx, addr, g.id)
	return applied, err == nil, err
}

// Draining reports whether Drain was called.
func (n *Node) Draining() bool { return n.draining.Load() }

// hasOtherVoter reports whether the group's configuration has a voter other
// than this node.
func (g *Group) hasOtherVoter() bool {
	cf, _, err := g.configuration()
	if err != nil {
		return false
	}
	for _, s := range cf.Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != g.node.cfg.NodeID {
			return true
		}
	}
	return false
}
