package node

import (
	"context"
	"fmt"
	"time"

	"github.com/syncstore/syncstore/fsm"
)

// Consistency chooses how a read is served.
type Consistency int

const (
	// Linearizable reads see every write acknowledged before they began.
	Linearizable Consistency = iota
	// Stale reads are served from this replica's state, which may lag.
	Stale
)

// Pull reads a page of a timeline.
func (n *Node) Pull(ctx context.Context, timeline string, after uint64, limit int, c Consistency) (fsm.PullResult, error) {
	g, err := n.pageGroup(ctx, timeline, &limit, c)
	if err != nil {
		return fsm.PullResult{}, err
	}
	res, err := g.fsm.Pull(timeline, after, limit, n.cfg.MaxPageBytes)
	return res, g.afterRead(timeline, err)
}

// pageGroup checks a page request (Pull, History) and returns the local
// replica to read it from, once it may be read with consistency c.
func (n *Node) pageGroup(ctx context.Context, timeline string, limit *int, c Consistency) (*Group, error) {
	if err := n.pageLimit(limit); err != nil {
		return nil, err
	}
	return n.readGroup(ctx, timeline, fsm.ValidateTimelineID, c)
}

// readGroup checks id with validate and returns the local replica of its
// group, once it may be read with consistency c.
func (n *Node) readGroup(ctx context.Context, id string, validate func(string) error, c Consistency) (*Group, error) {
	if err := validate(id); err != nil {
		return nil, err
	}
	g, err := n.route(id)
	if err != nil {
		return nil, err
	}
	if err := g.readBarrier(ctx, c); err != nil {
		return nil, err
	}
	return g, nil
}

// Head returns the newest seq of a timeline.
func (n *Node) Head(ctx context.Context, timeline string, c Consistency) (uint64, error) {
	g, err := n.routeRead(timeline)
	if err != nil {
		return 0, err
	}
	if err := g.readBarrier(ctx, c); err != nil {
		return 0, err
	}
	head, err := g.fsm.Head(timeline)
	return head, g.afterRead(timeline, err)
}

func (n *Node) routeRead(timeline string) (*Group, error) {
	if err := fsm.ValidateTimelineID(timeline); err != nil {
		return nil, err
	}
	return n.route(timeline)
}

// readBarrier makes a linearizable read safe. Every write this leader
// acknowledged was applied to its state machine before the acknowledgement,
// and a new leader first applies everything committed before its term (see
// becomeReady), which covers what its predecessors acknowledged. So once a
// quorum confirms this replica still leads (no newer term exists), its local
// state holds every write acknowledged before the read began.
func (g *Group) readBarrier(ctx context.Context, c Consistency) (err error) {
	if err := g.checkFenced(); err != nil {
		return err
	}
	if c == Stale {
		return nil
	}
	start := time.Now()
	defer func() { g.node.metrics.read.WithLabelValues(outcome(err)).Observe(time.Since(start).Seconds()) }()
	if !g.IsLeader() {
		return g.notLeader()
	}
	if !g.isReadyLeader() {
		return ErrLeaderNotReady
	}
	ctx, cancel := g.withDefaultTimeout(ctx)
	defer cancel()
	if err := g.verifyLeader(ctx); err != nil {
		return fmt.Errorf("%w (%v)", g.notLeader(), err)
	}
	// Leadership may have moved to a newer term and back while we waited.
	if !g.isReadyLeader() {
		return ErrLeaderNotReady
	}
	return nil
}

// afterRead finishes a read of id: a damaged value fences the replica
// (readResult), and a read the group no longer serves, because a move
// took id's slot away while the read ran, is refused as routed with an
// old map (checked after reading: a group that still serves id once the
// read is done served it throughout, since a source gives a range up
// before its target serves it).
func (g *Group) afterRead(id string, err error) error {
	if err != nil {
		return g.readResult(err)
	}
	ok, err := g.fsm.Serves(id)
	if err != nil {
		return g.readResult(err)
	}
	if !ok {
		g.node.refreshShardMap()
		return fmt.Errorf("%w: %q is served by another group now", fsm.ErrWrongGroup, id)
	}
	return nil
}
