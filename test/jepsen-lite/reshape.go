package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// Faults that change the cluster's shape: they start and return, and the
// moves they plan run alongside the faults that follow.
const (
	// faultSlotMove moves half of a random group's slots to another group;
	// every other one is aborted shortly after it starts.
	faultSlotMove = "slot-move"
	// faultSplit splits a random group (while the cluster has fewer than
	// twice its first number of groups; a slot move otherwise).
	faultSplit = "split"
)

// reshape runs a shape-changing fault and names what it did.
func (nm *nemesis) reshape(ctx context.Context, kind string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := nm.shardMap(ctx)
	if err != nil {
		return nil, err
	}
	if kind == faultSplit && len(m.Groups) < 2*nm.shards {
		g := m.Groups[nm.rng.IntN(len(m.Groups))]
		var resp *syncv1.SplitGroupResponse
		err := nm.admin.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
			resp, err = a.SplitGroup(ctx, &syncv1.SplitGroupRequest{GroupId: uint64(g.ID)})
			return err
		})
		return []string{fmt.Sprintf("split %d -> %d, moves %v", g.ID, resp.GetGroupId(), resp.GetMoveIds())}, err
	}
	var donors []shard.Group
	for _, g := range m.Groups {
		if shard.Slots(g.Ranges) >= 2 {
			donors = append(donors, g)
		}
	}
	if len(donors) == 0 || len(m.Groups) < 2 {
		return nil, fmt.Errorf("no group to move slots from")
	}
	from := donors[nm.rng.IntN(len(donors))]
	to := m.Groups[nm.rng.IntN(len(m.Groups))]
	for to.ID == from.ID {
		to = m.Groups[nm.rng.IntN(len(m.Groups))]
	}
	plan, err := shard.SplitPlan(m, from.ID, to.ID)
	if err != nil {
		return nil, err
	}
	r := plan[0].Ranges[0]
	var id uint64
	err = nm.admin.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
		resp, err := a.MoveSlots(ctx, &syncv1.MoveSlotsRequest{Ranges: []*syncv1.SlotRange{{Start: r.Start, End: r.End}}, TargetGroup: uint64(to.ID), Reason: "nemesis"})
		id = resp.GetMoveId()
		return err
	})
	what := []string{fmt.Sprintf("move %d: slots %d-%d %d -> %d", id, r.Start, r.End-1, from.ID, to.ID)}
	if err != nil {
		return what, err
	}
	nm.moves++
	if nm.moves%2 == 0 {
		select { // let the copy start, then stop it
		case <-ctx.Done():
		case <-time.After(time.Duration(nm.rng.IntN(1500)) * time.Millisecond):
		}
		err = nm.admin.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.AbortMove(ctx, &syncv1.AbortMoveRequest{MoveId: id})
			return err
		})
		what = append(what, fmt.Sprintf("abort %d", id))
	}
	return what, err
}

func (nm *nemesis) shardMap(ctx context.Context) (*shard.Map, error) {
	var resp *syncv1.ShardMapResponse
	if err := nm.admin.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
		resp, err = a.ShardMap(ctx, &syncv1.ShardMapRequest{})
		return err
	}); err != nil {
		return nil, err
	}
	return client.ShardMap(resp)
}

// listMoves reads every move from the meta leader.
func listMoves(ctx context.Context, admin *client.Client) ([]*syncv1.MoveInfo, error) {
	var resp *syncv1.ListMovesResponse
	err := admin.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
		resp, err = a.ListMoves(ctx, &syncv1.ListMovesRequest{})
		return err
	})
	return resp.GetMoves(), err
}

// waitMovesDone waits until every move is cleaned or aborted, so the final
// read sees one shard map.
func waitMovesDone(ctx context.Context, admin *client.Client, d time.Duration) ([]*syncv1.MoveInfo, error) {
	deadline := time.Now().Add(d)
	for {
		moves, err := listMoves(ctx, admin)
		busy := 0
		for _, m := range moves {
			if m.GetPhase() != "cleaned" && m.GetPhase() != "aborted" {
				busy++
			}
		}
		if err == nil && busy == 0 {
			return moves, nil
		}
		if time.Now().After(deadline) {
			return moves, fmt.Errorf("%d moves still under way after %s (last error %v)", busy, d, err)
		}
		select {
		case <-ctx.Done():
			return moves, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// printMoves reports the moves: how many completed, were aborted or were
// taken over by another meta leader, and for each switched one the time
// from its fence to its switch and the longest time without an
// acknowledged append to its slots around that window (the workload's
// appends; start is the history's time zero).
func printMoves(log io.Writer, moves []*syncv1.MoveInfo, ops []history.Op, start time.Time) {
	done, aborted, resumed := 0, 0, 0
	for _, m := range moves {
		switch m.GetPhase() {
		case "cleaned":
			done++
		case "aborted":
			aborted++
		}
		if m.GetResumes() > 0 {
			resumed++
		}
	}
	fmt.Fprintf(log, "moves: %d done, %d aborted, %d taken over by another meta leader\n", done, aborted, resumed)
	for _, m := range moves {
		fenced, gap := "-", "-"
		if m.GetSwitchedMs() > 0 {
			fenced = (time.Duration(m.GetSwitchedMs()-m.GetFencedMs()) * time.Millisecond).String()
			from := time.UnixMilli(m.GetFencedMs()).Sub(start).Nanoseconds()
			to := time.UnixMilli(m.GetSwitchedMs()).Sub(start).Nanoseconds()
			gap = time.Duration(appendGap(ops, m.GetRanges(), from, to)).Round(time.Millisecond).String()
		}
		var slots []string
		for _, r := range m.GetRanges() {
			slots = append(slots, fmt.Sprintf("%d-%d", r.GetStart(), r.GetEnd()-1))
		}
		fmt.Fprintf(log, "  move %d %d->%d slots %s: %s, %d records, fenced to switch %s, longest gap of appends to its slots %s, resumes %d, reason %s\n",
			m.GetId(), m.GetSourceGroup(), m.GetTargetGroup(), strings.Join(slots, ","), m.GetPhase(), m.GetRecords(), fenced, gap, m.GetResumes(), m.GetReason())
	}
}

// appendGap is the longest time between two consecutive acknowledged
// appends to timelines in ranges that overlaps [from, to] (ns since the
// history's start), the gaps straddling its ends included.
func appendGap(ops []history.Op, ranges []*syncv1.SlotRange, from, to int64) int64 {
	in := func(tl string) bool {
		s := uint32(shard.SlotOf(tl))
		return slices.ContainsFunc(ranges, func(r *syncv1.SlotRange) bool { return s >= r.GetStart() && s < r.GetEnd() })
	}
	var acks []int64
	for _, op := range ops {
		if op.Kind == history.Append && op.Outcome == history.OK && in(op.Timeline) {
			acks = append(acks, op.Complete)
		}
	}
	slices.Sort(acks)
	var gap int64
	for i := 1; i < len(acks); i++ {
		if acks[i] > from && acks[i-1] < to {
			gap = max(gap, acks[i]-acks[i-1])
		}
	}
	return gap
}

// More shape changes, through the operator's calls.
const (
	// faultNodeRemoveAdd removes a live node (never the first, which
	// would bootstrap a new cluster from an empty dir), waits for it to
	// stop itself, and brings it back under the same id from an empty data
	// dir with --join.
	faultNodeRemoveAdd = "node-remove-add"
	// faultOperatorMove moves a replica of a random group to a node that
	// lacks one, or, every other time, hands a group's leadership to
	// another of its replicas.
	faultOperatorMove = "replica-move-or-leader-transfer"
)

// removeAndAdd is faultNodeRemoveAdd; it gives up waiting for the node to
// stop after d (healAll brings it back whenever it stops).
func (nm *nemesis) removeAndAdd(ctx context.Context, d time.Duration) ([]string, error) {
	h := nm.net.hosts[1+nm.rng.IntN(len(nm.net.hosts)-1)]
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := nm.admin.Admin(cctx, func(ctx context.Context, a syncv1.AdminClient) error {
		_, err := a.RemoveNode(ctx, &syncv1.RemoveNodeRequest{NodeId: h.id})
		return err
	})
	cancel()
	what := []string{"remove " + h.id}
	if err != nil {
		return what, err
	}
	select {
	case <-ctx.Done():
		return what, ctx.Err()
	case <-time.After(d):
		return append(what, "still removing"), nil
	case werr := <-h.exited:
		h.exited <- werr // for whoever waits next
	}
	h.cmd = nil
	return append(what, "re-add "+h.id), nm.restartRemoved(h)
}

// restartRemoved brings back a host that stopped itself after its removal:
// its data dir says so and is refused, so it starts from an empty one.
func (nm *nemesis) restartRemoved(h *host) error {
	if err := os.RemoveAll(h.dataDir); err != nil {
		return err
	}
	return h.start(nm.syncd, nm.net.hosts[0], nm.shards)
}

// operatorMove is faultOperatorMove.
func (nm *nemesis) operatorMove(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := nm.shardMap(ctx)
	if err != nil {
		return nil, err
	}
	g := m.Groups[nm.rng.IntN(len(m.Groups))]
	var spare []string
	for _, h := range nm.net.hosts {
		if !slices.Contains(g.Replicas, h.id) {
			spare = append(spare, h.id)
		}
	}
	nm.operatorMoves++
	// A group on every node has no replica to move: its leadership moves.
	if (nm.operatorMoves%2 == 0 || len(spare) == 0) && len(g.Replicas) > 1 {
		to := g.Replicas[1+nm.rng.IntN(len(g.Replicas)-1)]
		err := nm.admin.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.TransferLeader(ctx, &syncv1.TransferLeaderRequest{GroupId: uint64(g.ID), To: to})
			return err
		})
		return []string{fmt.Sprintf("group %d leader -> %s", g.ID, to)}, err
	}
	if len(spare) == 0 {
		return nil, fmt.Errorf("group %d is on every node: no replica to move", g.ID)
	}
	from, to := g.Replicas[nm.rng.IntN(len(g.Replicas))], spare[nm.rng.IntN(len(spare))]
	err = nm.admin.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
		_, err := a.MoveReplica(ctx, &syncv1.MoveReplicaRequest{GroupId: uint64(g.ID), From: from, To: to})
		return err
	})
	return []string{fmt.Sprintf("group %d replica %s -> %s", g.ID, from, to)}, err
}
