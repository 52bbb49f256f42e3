package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// AppendRequest is one entry to add to a timeline.
type AppendRequest struct {
	Timeline       string
	Payload        []byte
	IdempotencyKey string
	Metadata       map[string]string
}

// Append proposes an entry to the timeline's group and returns the seq the
// state machine gave it once a quorum has it on disk.
func (n *Node) Append(ctx context.Context, req AppendRequest) (fsm.AppendResult, error) {
	a := &fsmpb.Append{
		Timeline:       req.Timeline,
		Payload:        req.Payload,
		IdempotencyKey: req.IdempotencyKey,
		Metadata:       req.Metadata,
		DedupeWindowMs: n.cfg.DedupeWindow.Milliseconds(),
	}
	if err := n.validateAppend(a); err != nil {
		return fsm.AppendResult{}, err
	}
	if err := n.storage.CheckSpace(); err != nil {
		return fsm.AppendResult{}, err
	}
	g, err := n.route(req.Timeline)
	if err != nil {
		return fsm.AppendResult{}, err
	}
	return g.appendOne(ctx, a)
}

func (n *Node) validateAppend(a *fsmpb.Append) error {
	if err := n.checkPayload(a.GetPayload()); err != nil {
		return err
	}
	return fsm.ValidateAppend(a)
}

// checkPayload enforces this node's payload limit, which is at most the
// state machine's fixed one.
func (n *Node) checkPayload(payload []byte) error {
	if l := len(payload); l > n.cfg.MaxPayloadBytes {
		return fmt.Errorf("%w: payload is %d bytes; the limit is %d", fsm.ErrInvalidArgument, l, n.cfg.MaxPayloadBytes)
	}
	return nil
}

// ProposeUnchecked replicates a command through the group exactly as
// given, without the checks the Node's request methods make first. It
// exists for tests that must show the state machine refusing what a buggy
// or older proposer could log; nothing on the network reaches it.
func (g *Group) ProposeUnchecked(ctx context.Context, cmd *fsmpb.Command) (*fsm.Result, error) {
	return g.propose(ctx, cmd)
}

// propose stamps a command with the time, replicates it and returns what the
// state machine answered.
func (g *Group) propose(ctx context.Context, cmd *fsmpb.Command) (*fsm.Result, error) {
	res, _, err := g.proposeAt(ctx, cmd)
	return res, err
}

// proposeAt is propose, also returning the command's log index.
func (g *Group) proposeAt(ctx context.Context, cmd *fsmpb.Command) (res *fsm.Result, index uint64, err error) {
	start := time.Now()
	defer func() { g.node.metrics.observePropose(opName(cmd), start, err) }()
	return g.proposeWith(ctx, cmd, g.await)
}

// proposeBatch proposes a batch of appends without the latency metric (the
// batcher's callers observe their own, one per append, and wait for their
// own deadlines). It waits for Raft's answer on the calling goroutine, with
// no goroutine per proposal: ctx bounds only the enqueueing.
func (g *Group) proposeBatch(ctx context.Context, cmd *fsmpb.Command) (*fsm.Result, error) {
	res, _, err := g.proposeWith(ctx, cmd, func(_ context.Context, start func() raft.Future) error { return g.awaitAnswer(start) })
	return res, err
}

func (g *Group) proposeWith(ctx context.Context, cmd *fsmpb.Command, await func(context.Context, func() raft.Future) error) (res *fsm.Result, index uint64, err error) {
	if err := g.checkFenced(); err != nil {
		return nil, 0, err
	}
	if g.raft.State() != raft.Leader {
		return nil, 0, g.notLeader()
	}
	if err := g.checkCommandVersion(ctx, cmd); err != nil {
		return nil, 0, err
	}
	cmd.NowMs = g.node.cfg.Clock().UnixMilli()
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := g.withDefaultTimeout(ctx)
	defer cancel()
	var future raft.ApplyFuture
	err = await(ctx, func() raft.Future {
		future = g.raft.Apply(data, timeUntil(ctx))
		return future
	})
	if err != nil {
		return nil, 0, g.classifyApplyError(err)
	}
	res, ok := future.Response().(*fsm.Result)
	if !ok {
		return nil, 0, fmt.Errorf("node: state machine answered %T", future.Response())
	}
	if res.Err != nil {
		if errors.Is(res.Err, fsm.ErrWrongGroup) {
			g.node.refreshShardMap() // the retry routes with the newer map
		}
		return nil, 0, res.Err
	}
	for _, it := range res.Batch {
		if errors.Is(it.Err, fsm.ErrWrongGroup) {
			g.node.refreshShardMap()
			break
		}
	}
	return res, future.Index(), nil
}

// classifyApplyError sorts Raft's errors into "certainly not applied" and
// "outcome unknown": a command that reached the log may still commit after
// the leader that proposed it lost its leadership.
func (g *Group) classifyApplyError(err error) error {
	switch {
	case errors.Is(err, ErrClosed):
		return err // refused before it reached Raft
	case errors.Is(err, raft.ErrNotLeader):
		return g.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %v", ErrNotApplied, err)
	default: // ErrLeadershipLost, ErrRaftShutdown, ErrAbortedByRestore, deadlines
		return fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	}
}

func timeUntil(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return max(time.Until(d), time.Millisecond)
}

func opName(cmd *fsmpb.Command) string {
	switch cmd.GetOp().(type) {
	case *fsmpb.Command_Append:
		return "append"
	case *fsmpb.Command_RegisterNode:
		return "register_node"
	case *fsmpb.Command_SetShardMap:
		return "set_shard_map"
	case *fsmpb.Command_SetNodeState:
		return "set_node_state"
	case *fsmpb.Command_SetRanges:
		return "set_ranges"
	case *fsmpb.Command_Send:
		return "send"
	case *fsmpb.Command_Deliver:
		return "deliver"
	case *fsmpb.Command_DeliveryDone:
		return "delivery_done"
	case *fsmpb.Command_Trim:
		return "trim"
	case *fsmpb.Command_RecordWrite:
		return "record_write"
	case *fsmpb.Command_CompactTombstones:
		return "compact_tombstones"
	}
	return "other"
}
