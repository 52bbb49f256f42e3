package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// MaxSyncManyCollections bounds the collections of one SyncMany.
const MaxSyncManyCollections = 1000

// RecordOp is one put or delete of a collection write.
type RecordOp struct {
	Key      string
	Delete   bool
	Value    []byte
	Metadata map[string]string
}

// WriteRequest is one atomic write to a collection.
type WriteRequest struct {
	Collection string
	Ops        []RecordOp
	// Conditions maps keys to the version each must be at (0: absent).
	Conditions []fsm.RecordVersion
	// ExpectedVersion, when set, is the collection version the write needs.
	ExpectedVersion *uint64
	IdempotencyKey  string
	// Copies: records of this write to copy into other collections.
	Copies []RecordCopy
}

// Write proposes a collection write to its group and returns the version
// it produced once a quorum has it on disk. A failed condition is an
// *fsm.ConditionFailedError.
func (n *Node) Write(ctx context.Context, req WriteRequest) (fsm.WriteResult, error) {
	w := &fsmpb.RecordWrite{
		Collection:     req.Collection,
		IdempotencyKey: req.IdempotencyKey,
		DedupeWindowMs: n.cfg.DedupeWindow.Milliseconds(),
	}
	for _, op := range req.Ops {
		w.Ops = append(w.Ops, &fsmpb.RecordOp{Key: op.Key, Delete: op.Delete, Value: op.Value, Metadata: op.Metadata})
	}
	for _, c := range req.Conditions {
		w.Conditions = append(w.Conditions, &fsmpb.RecordCondition{Key: c.Key, Version: c.Version})
	}
	if req.ExpectedVersion != nil {
		w.HasExpectedVersion, w.ExpectedVersion = true, *req.ExpectedVersion
	}
	for _, c := range req.Copies {
		w.Copies = append(w.Copies, &fsmpb.RecordCopy{Key: c.Key, TargetKey: c.TargetKey, Targets: c.Targets})
	}
	if err := fsm.ValidateRecordWrite(w); err != nil {
		return fsm.WriteResult{}, err
	}
	if err := n.storage.CheckSpace(); err != nil {
		return fsm.WriteResult{}, err
	}
	g, err := n.route(req.Collection)
	if err != nil {
		return fsm.WriteResult{}, err
	}
	res, err := g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_RecordWrite{RecordWrite: w}})
	if err != nil {
		return fsm.WriteResult{}, err
	}
	return *res.Write, nil
}

// GetRecords reads records of a collection by key or, with no keys, a page
// of its live records in key order after afterKey.
func (n *Node) GetRecords(ctx context.Context, collection string, keys []string, afterKey string, limit int, c Consistency) (fsm.GetResult, error) {
	if len(keys) > n.cfg.MaxPageSize {
		return fsm.GetResult{}, fmt.Errorf("%w: %d keys; at most %d per Get", fsm.ErrInvalidArgument, len(keys), n.cfg.MaxPageSize)
	}
	if len(keys) == 0 {
		if err := n.pageLimit(&limit); err != nil {
			return fsm.GetResult{}, err
		}
	}
	g, err := n.collectionGroup(ctx, collection, c)
	if err != nil {
		return fsm.GetResult{}, err
	}
	var res fsm.GetResult
	if len(keys) > 0 {
		res, err = g.fsm.GetRecords(collection, keys)
	} else {
		res, err = g.fsm.ListRecords(collection, afterKey, limit, n.cfg.MaxPageBytes)
	}
	return res, g.afterRead(collection, err)
}

// SyncRecords returns a page of the records changed after since.
func (n *Node) SyncRecords(ctx context.Context, collection string, since uint64, limit int, c Consistency) (fsm.SyncResult, error) {
	if err := n.pageLimit(&limit); err != nil {
		return fsm.SyncResult{}, err
	}
	g, err := n.collectionGroup(ctx, collection, c)
	if err != nil {
		return fsm.SyncResult{}, err
	}
	res, err := g.fsm.SyncRecords(collection, since, limit, n.cfg.MaxPageBytes)
	return res, g.afterRead(collection, err)
}

// SyncRequest is one collection of a SyncMany.
type SyncRequest struct {
	Collection string
	Since      uint64
	Limit      int
	Stale      bool
}

// SyncOutcome is one collection's answer in a SyncMany: a result or an
// error of its own (a *NotLeaderError for a group this node does not lead,
// which the caller forwards).
type SyncOutcome struct {
	Result fsm.SyncResult
	Err    error
}

// SyncMany syncs many collections, in the order asked. Collections of one
// group share one read barrier; those of groups this node cannot serve get
// their group's NotLeaderError.
func (n *Node) SyncMany(ctx context.Context, reqs []SyncRequest) ([]SyncOutcome, error) {
	if len(reqs) > MaxSyncManyCollections {
		return nil, fmt.Errorf("%w: %d collections; at most %d per SyncMany", fsm.ErrInvalidArgument, len(reqs), MaxSyncManyCollections)
	}
	reqs = slices.Clone(reqs) // pageLimit sets unset limits: not in the caller's slice
	out := make([]SyncOutcome, len(reqs))
	type groupKey struct {
		id    shard.GroupID
		stale bool
	}
	byGroup := map[groupKey][]int{}
	var order []groupKey
	for i, r := range reqs {
		if err := fsm.ValidateCollectionID(r.Collection); err != nil {
			out[i].Err = err
			continue
		}
		if err := n.pageLimit(&reqs[i].Limit); err != nil {
			out[i].Err = err
			continue
		}
		g, err := n.route(r.Collection)
		if err != nil {
			out[i].Err = err
			continue
		}
		k := groupKey{g.id, r.Stale}
		if _, ok := byGroup[k]; !ok {
			order = append(order, k)
		}
		byGroup[k] = append(byGroup[k], i)
	}
	for _, k := range order {
		g := n.Group(k.id)
		c := Linearizable
		if k.stale {
			c = Stale
		}
		var err error
		if g == nil {
			err = n.notHosted(k.id)
		} else {
			err = g.readBarrier(ctx, c)
		}
		for _, i := range byGroup[k] {
			if err != nil {
				out[i].Err = err
				continue
			}
			res, rerr := g.fsm.SyncRecords(reqs[i].Collection, reqs[i].Since, reqs[i].Limit, n.cfg.MaxPageBytes)
			out[i] = SyncOutcome{Result: res, Err: g.afterRead(reqs[i].Collection, rerr)}
		}
	}
	return out, nil
}

// collectionGroup returns the local replica to read a collection from,
// once it may be read with consistency c.
func (n *Node) collectionGroup(ctx context.Context, collection string, c Consistency) (*Group, error) {
	return n.readGroup(ctx, collection, fsm.ValidateCollectionID, c)
}

// pageLimit checks a read's page limit and sets 0 (unset) to the default
// page size.
func (n *Node) pageLimit(limit *int) error {
	def := min(DefaultPageSize, n.cfg.MaxPageSize)
	if *limit == 0 {
		*limit = def
	}
	if *limit < 1 || *limit > n.cfg.MaxPageSize {
		return fmt.Errorf("%w: limit %d must be within 1..%d (0: %d)", fsm.ErrInvalidArgument, *limit, n.cfg.MaxPageSize, def)
	}
	return nil
}

const (
	// compactScanPerRound bounds the collection keys one compaction round
	// reads; the scan resumes where it stopped next round.
	compactScanPerRound = 10000
	// compactItemsPerCommand bounds the collections one CompactTombstones
	// names.
	compactItemsPerCommand = 256
)

// compactionLoop compacts a data group's tombstones every
// TombstoneCompactEvery while this replica is its ready leader. The leader
// computes each cutoff from its own state and clock and proposes it, so
// every replica drops exactly the same tombstones and records the same
// horizon.
func (g *Group) compactionLoop(ctx context.Context) {
	tick := time.NewTicker(g.node.cfg.TombstoneCompactEvery)
	defer tick.Stop()
	policy := fsm.CompactionPolicy{MaxAgeMs: g.node.cfg.TombstoneMaxAge.Milliseconds(), Keep: g.node.cfg.TombstoneKeep}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		resume := ""
		for ctx.Err() == nil && g.isReadyLeader() {
			items, next, err := g.fsm.CompactionCandidates(policy, g.node.cfg.Clock().UnixMilli(), resume, compactItemsPerCommand, compactScanPerRound)
			if err == nil && len(items) > 0 {
				_, err = g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_CompactTombstones{CompactTombstones: &fsmpb.CompactTombstones{Items: items}}})
			}
			if err != nil {
				g.log.Warn("tombstone compaction", "err", err)
				break
			}
			if resume = next; resume == "" {
				break
			}
		}
	}
}
