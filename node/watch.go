package node

import (
	"errors"

	"github.com/syncstore/syncstore/node/hub"
	"github.com/syncstore/syncstore/shard"
)

// Watch returns a watcher of this node's timelines, following none yet;
// Close it when done.
func (n *Node) Watch() *hub.Watcher { return n.hub.Watch() }

// Serving says whether this node should stream a timeline's new entries:
// it leads the timeline's group. A follower would work too (what it applies
// is committed) but learns of each commit only with the leader's next
// heartbeat, up to a tenth of the heartbeat timeout later; a deposed leader
// cut off from its group steps down within the leader lease, so its
// subscribers are sent on. When it should not, leaderAddr is where to go, if
// known.
func (n *Node) Serving(timeline string) (group shard.GroupID, leaderAddr string, ok bool) {
	m := n.shardMap()
	if m == nil {
		return 0, "", false
	}
	group = m.GroupFor(timeline)
	g := n.Group(group)
	if g == nil {
		var nl *NotLeaderError
		if errors.As(n.notHosted(group), &nl) {
			leaderAddr = nl.LeaderGRPCAddr
		}
		return group, leaderAddr, false
	}
	if g.IsLeader() {
		return group, "", true
	}
	_, leaderAddr = g.Leader()
	return group, leaderAddr, false
}
