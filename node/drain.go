package node

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Drain prepares a clean stop. The node stops acting on the shard map and
// reports itself draining (so peers' probes fail and no leadership is
// handed back to it), then asks every group it leads to hand leadership to
// another voter and waits, up to ctx, until it leads none that has one.
// Without it a stopped leader's groups wait an election timeout, and its
// clients a retry, before they are served again.
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
	for _, g := range groups {
		if g.IsLeader() {
			// Requested, not awaited: the future of a transfer still queued at
			// shutdown is never answered. Leadership is polled below instead.
			g.raft.LeadershipTransfer()
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		led := 0
		for _, g := range groups {
			if g.IsLeader() {
				led++
			}
		}
		if led == 0 {
			n.log.Info("drained: leads no group that has another voter")
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node: drain: still leading %d groups: %w", led, ctx.Err())
		case <-tick.C:
		}
	}
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
