package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// DigestProber asks the node at grpcAddr for its digest of a group at a
// digest point (known false: not there yet, or no longer kept).
type DigestProber func(ctx context.Context, grpcAddr string, group shard.GroupID, index uint64) (digest string, known bool, err error)

// Fencer tells the node at grpcAddr to fence its replica of a group.
type Fencer func(ctx context.Context, grpcAddr string, group shard.GroupID, reason string) error

// digestWait bounds how long a check waits for the replicas' digests.
const digestWait = 30 * time.Second

// The background replica check. Every DigestCheckInterval a group's
// leader proposes a DigestPoint; every replica hashes its state right after
// applying it, so all hash the same log prefix. The leader collects the
// digests and, when one digest is held by a majority of the replicas that
// answered (at least two), fences the replicas that differ: itself, or
// through the others' nodes. Checksums catch a damaged value when it is
// read; this catches a replica that diverged or whose damage nobody read.

// maybeCheckDigests starts a check of g if one is due and none is running.
func (n *Node) maybeCheckDigests(g *Group) {
	every := n.cfg.DigestCheckInterval
	if every <= 0 || n.cfg.DigestProber == nil || g.outbox == nil {
		return // data groups only; the meta group is small and read by every node
	}
	if time.Since(g.lastDigestCheck) < every || !g.digestCheck.CompareAndSwap(false, true) {
		return
	}
	g.lastDigestCheck = time.Now()
	g.wg.Go(func() {
		defer g.digestCheck.Store(false)
		if err := n.checkDigests(g.ctx, g); err != nil {
			g.log.Warn("replica digest check", "err", err)
		}
	})
}

func (n *Node) checkDigests(ctx context.Context, g *Group) error {
	_, index, err := g.proposeAt(ctx, &fsmpb.Command{IgnoreIfUnknown: true, Op: &fsmpb.Command_DigestPoint{DigestPoint: &fsmpb.DigestPoint{}}})
	if err != nil {
		return fmt.Errorf("propose a digest point: %w", err)
	}
	cf, _, err := g.configuration()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, digestWait)
	defer cancel()
	digests := map[string]string{} // replica -> digest
	for _, s := range cf.Servers {
		d, ok := n.replicaDigest(ctx, g, string(s.ID), index)
		if ok {
			digests[string(s.ID)] = d
		}
	}
	byDigest := map[string][]string{}
	for id, d := range digests {
		byDigest[d] = append(byDigest[d], id)
	}
	if len(byDigest) <= 1 {
		g.node.metrics.digestChecks.WithLabelValues("equal").Inc()
		return nil
	}
	var majority string
	for d, ids := range byDigest {
		if len(ids)*2 > len(digests) && len(digests) >= 2 {
			majority = d
		}
	}
	if majority == "" {
		g.node.metrics.digestChecks.WithLabelValues("undecided").Inc()
		return fmt.Errorf("group %d: replicas differ at index %d and no digest has a majority: %v", g.id, index, byDigest)
	}
	g.node.metrics.digestChecks.WithLabelValues("diverged").Inc()
	var errs []error
	for d, ids := range byDigest {
		if d == majority {
			continue
		}
		slices.Sort(ids)
		for _, id := range ids {
			reason := fmt.Sprintf("its state at index %d differs from the majority's (%s vs %s, held by %v)", index, d, majority, byDigest[majority])
			g.log.Error("replica diverged: fencing it", "replica", id, "index", index)
			if id == n.cfg.NodeID {
				g.fence(errors.New(reason))
				continue
			}
			if addr := n.grpcAddrOf(id); addr == "" || n.cfg.Fencer == nil {
				errs = append(errs, fmt.Errorf("cannot reach %s to fence it", id))
			} else if err := n.cfg.Fencer(ctx, addr, g.id, reason); err != nil {
				errs = append(errs, fmt.Errorf("fence %s: %w", id, err))
			}
		}
	}
	return errors.Join(errs...)
}

// replicaDigest waits for a replica's digest at index.
func (n *Node) replicaDigest(ctx context.Context, g *Group, id string, index uint64) (string, bool) {
	for {
		var d string
		var ok bool
		if id == n.cfg.NodeID {
			d, ok = g.fsm.DigestAt(index)
		} else if addr := n.grpcAddrOf(id); addr != "" {
			d, ok, _ = n.cfg.DigestProber(ctx, addr, g.id, index)
		}
		if ok {
			return d, true
		}
		select {
		case <-ctx.Done():
			return "", false
		case <-time.After(200 * time.Millisecond): // polling a peer, bounded by ctx
		}
	}
}

// DigestAt returns this node's digest of a group at a digest point.
func (n *Node) DigestAt(group shard.GroupID, index uint64) (string, bool, error) {
	g := n.Group(group)
	if g == nil {
		return "", false, fmt.Errorf("%w: no replica of group %d here", ErrUnknownGroup, group)
	}
	d, ok := g.fsm.DigestAt(index)
	return d, ok, nil
}

// FenceReplica fences this node's replica of a group that its leader found
// diverged.
func (n *Node) FenceReplica(group shard.GroupID, reason string) error {
	g := n.Group(group)
	if g == nil {
		return fmt.Errorf("%w: no replica of group %d here", ErrUnknownGroup, group)
	}
	g.fence(fmt.Errorf("the group's leader found it diverged: %s", reason))
	return nil
}
