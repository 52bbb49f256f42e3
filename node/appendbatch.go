package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/node/batch"
)

// Appends that reach a group's leader together are logged as one entry
// (fsmpb.AppendBatch) by the group's batcher (node/batch). These bound it.
const (
	// appendBatchMaxItems bounds the appends of one entry.
	appendBatchMaxItems = 256
	// appendBatchMaxBytes bounds the encoded appends of one entry (payload,
	// metadata, keys); a bigger append goes alone.
	appendBatchMaxBytes = 1 << 20
	// appendBatchInFlight is how many entries of batched appends a group
	// has in Raft at once. With one, appends gather while it commits; with
	// two, the batches were too small to gain anything (node/batch/DESIGN.md).
	appendBatchInFlight = 1
	// appendBatchQueue bounds the appends waiting for an entry.
	appendBatchQueue = 4096
)

func newAppendBatcher(g *Group) (*batch.Batcher[*fsmpb.Append, fsm.AppendResult], error) {
	return batch.New(batch.Limits{
		MaxItems:    min(appendBatchMaxItems, fsm.MaxBatchAppends),
		MaxBytes:    appendBatchMaxBytes,
		MaxInFlight: appendBatchInFlight,
		Queue:       appendBatchQueue,
	}, func(a *fsmpb.Append) int { return proto.Size(a) }, g.proposeAppends)
}

// appendOne proposes a through the group's batcher. Fencing and leadership
// are checked once per batch, when it is proposed.
func (g *Group) appendOne(ctx context.Context, a *fsmpb.Append) (res fsm.AppendResult, err error) {
	start := time.Now()
	defer func() { g.node.metrics.observePropose("append", start, err) }()
	ctx, cancel := g.withDefaultTimeout(ctx)
	defer cancel()
	res, err = g.appends.Do(ctx, a)
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, batch.ErrClosed):
		return res, ErrClosed
	case errors.Is(err, batch.ErrNotSent):
		return res, fmt.Errorf("%w: %v", ErrNotApplied, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return res, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	}
	return res, err
}

// proposeAppends logs appends as one entry and answers each with its own
// outcome. A lone append is logged as a plain Append.
func (g *Group) proposeAppends(appends []*fsmpb.Append) ([]batch.Outcome[fsm.AppendResult], error) {
	g.node.metrics.appendBatch.Observe(float64(len(appends)))
	ctx, cancel := context.WithTimeout(g.ctx, g.node.cfg.ApplyTimeout)
	defer cancel()
	if len(appends) == 1 {
		res, err := g.proposeBatch(ctx, &fsmpb.Command{Op: &fsmpb.Command_Append{Append: appends[0]}})
		if err != nil {
			return []batch.Outcome[fsm.AppendResult]{{Err: err}}, nil
		}
		return []batch.Outcome[fsm.AppendResult]{{Res: *res.Append}}, nil
	}
	res, err := g.proposeBatch(ctx, &fsmpb.Command{Op: &fsmpb.Command_AppendBatch{AppendBatch: &fsmpb.AppendBatch{Appends: appends}}})
	if err != nil {
		return nil, err
	}
	if len(res.Batch) != len(appends) {
		return nil, fmt.Errorf("node: state machine answered %d outcomes for a batch of %d appends", len(res.Batch), len(appends))
	}
	outs := make([]batch.Outcome[fsm.AppendResult], len(appends))
	for i, it := range res.Batch {
		if it.Err != nil {
			outs[i].Err = it.Err
		} else {
			outs[i].Res = *it.Append
		}
	}
	return outs, nil
}
