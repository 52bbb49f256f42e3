package node

import (
	"context"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/node/copier"
	"github.com/syncstore/syncstore/shard"
)

// RecordCopy asks a write to copy the record it sets at Key into each of
// Targets, under TargetKey there.
type RecordCopy struct {
	Key, TargetKey string
	Targets        []string
}

// Copier carries record copies to the leader of a group on another node
// (the rpc layer's Peer.Copy client).
type Copier func(ctx context.Context, grpcAddr string, group shard.GroupID, items []*fsmpb.CopyItem) (fsm.CopyResult, error)

// Copy applies record copies to collections of one group this node leads
// (Peer.Copy, and the copier of a group on this node).
func (n *Node) Copy(ctx context.Context, group shard.GroupID, items []*fsmpb.CopyItem) (fsm.CopyResult, error) {
	c := &fsmpb.CopyRecords{Items: items}
	if err := fsm.ValidateCopyRecords(c); err != nil {
		return fsm.CopyResult{}, err
	}
	if err := n.storage.CheckSpace(); err != nil {
		return fsm.CopyResult{}, err // the copier retries later
	}
	g, err := n.dataGroup(group, "copies")
	if err != nil {
		return fsm.CopyResult{}, err
	}
	res, err := g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_CopyRecords{CopyRecords: c}})
	if err != nil {
		return fsm.CopyResult{}, err
	}
	return *res.Copy, nil
}

// PendingCopies counts the group's copy jobs not yet made, up to limit.
func (g *Group) PendingCopies(limit int) (int, error) {
	jobs, err := g.fsm.CopyJobs(limit)
	return len(jobs), err
}

// copierGroup is a data group as its copier sees it.
type copierGroup struct{ g *Group }

func (c copierGroup) ReadyLeader() bool { return c.g.isReadyLeader() }

func (c copierGroup) Jobs(limit int) ([]*fsmpb.CopyJob, error) { return c.g.fsm.CopyJobs(limit) }

func (c copierGroup) Done(ctx context.Context, source string, version uint64) error {
	_, err := c.g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_CopyDone{CopyDone: &fsmpb.CopyDone{Source: source, Version: version}}})
	return err
}

// copierRouter routes copies from this node.
type copierRouter struct{ n *Node }

func (r copierRouter) GroupFor(collection string) (shard.GroupID, error) {
	m := r.n.shardMap()
	if m == nil {
		return 0, ErrNoShardMap
	}
	return m.GroupFor(collection), nil
}

// Copy applies items here when this node leads the group, else sends them
// to the leader's node.
func (r copierRouter) Copy(ctx context.Context, id shard.GroupID, items []*fsmpb.CopyItem) error {
	var remote func(context.Context, string) error
	if c := r.n.cfg.Copier; c != nil {
		remote = func(ctx context.Context, addr string) error { _, err := c(ctx, addr, id, items); return err }
	}
	return r.n.atLeader(ctx, func(ctx context.Context) error {
		_, err := r.n.Copy(ctx, id, items)
		return err
	}, remote)
}

func newGroupCopier(g *Group) *copier.Copier {
	return copier.New(copierGroup{g}, copierRouter{g.node}, g.log, func(result string) {
		g.node.metrics.copies.WithLabelValues(result).Inc()
	})
}
