package node

import (
	"context"
	"fmt"
	"io"

	"github.com/syncstore/syncstore/shard"
)

// ExportGroup writes this node's replica of a group (shard.MetaGroup for
// the meta group) for a backup: as its leader, after a read barrier, so the
// cut holds every write acknowledged before the call, at one applied index
// (fsm.Export). A group this node does not lead or host is a
// *NotLeaderError naming where to go.
func (n *Node) ExportGroup(ctx context.Context, id shard.GroupID, w io.Writer, begin func(applied uint64, digest string) error) error {
	g := n.meta
	if id != shard.MetaGroup {
		if m := n.shardMap(); m != nil {
			if _, ok := m.Group(id); !ok {
				return fmt.Errorf("%w: group %d is not in shard map v%d", ErrUnknownGroup, id, m.Version)
			}
		}
		if g = n.Group(id); g == nil {
			return n.notHosted(id)
		}
	}
	if err := g.readBarrier(ctx, Linearizable); err != nil {
		return err
	}
	return g.fsm.Export(w, begin)
}
