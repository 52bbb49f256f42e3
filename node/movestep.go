package node

import (
	"context"
	"fmt"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// MoveStepper carries a move step to the node at grpcAddr, which runs it
// if it leads the group (the rpc layer's Peer.Move client).
type MoveStepper func(ctx context.Context, grpcAddr string, group shard.GroupID, step *fsmpb.MoveStep) (*fsmpb.MoveStepResult, error)

// MoveStep runs one step of a slot move at this node's replica of a data
// group, which must lead it (Peer.Move, and the mover when the group's
// leader is here): proposing steps go through the group's log, reads are
// linearizable.
func (n *Node) MoveStep(ctx context.Context, group shard.GroupID, step *fsmpb.MoveStep) (*fsmpb.MoveStepResult, error) {
	g, err := n.dataGroup(group, "move steps")
	if err != nil {
		return nil, err
	}
	propose := func(cmd *fsmpb.Command) (*fsm.Result, error) {
		if err := n.storage.CheckSpace(); err != nil {
			return nil, err
		}
		return g.propose(ctx, cmd)
	}
	switch s := step.GetStep().(type) {
	case *fsmpb.MoveStep_Source:
		if err := fsm.ValidateMoveSource(s.Source); err != nil {
			return nil, err
		}
		_, err := propose(&fsmpb.Command{Op: &fsmpb.Command_MoveSource{MoveSource: s.Source}})
		return &fsmpb.MoveStepResult{}, err
	case *fsmpb.MoveStep_Import:
		if err := fsm.ValidateMoveImport(s.Import); err != nil {
			return nil, err
		}
		res, err := propose(&fsmpb.Command{Op: &fsmpb.Command_MoveImport{MoveImport: s.Import}})
		if err != nil {
			return nil, err
		}
		return &fsmpb.MoveStepResult{ImportState: res.MoveImport}, nil
	case *fsmpb.MoveStep_Cleanup:
		if err := fsm.ValidateMoveCleanup(s.Cleanup); err != nil {
			return nil, err
		}
		res, err := g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_MoveCleanup{MoveCleanup: s.Cleanup}})
		if err != nil {
			return nil, err
		}
		return &fsmpb.MoveStepResult{CleanupDone: res.CleanupDone}, nil
	case *fsmpb.MoveStep_SetRanges:
		if err := fsm.ValidateSetRanges(s.SetRanges); err != nil {
			return nil, err
		}
		_, err := g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: s.SetRanges}})
		return &fsmpb.MoveStepResult{}, err
	case *fsmpb.MoveStep_Export:
		if err := g.readBarrier(ctx, Linearizable); err != nil {
			return nil, err
		}
		e := s.Export
		maxBytes := min(int(e.GetMaxBytes()), n.cfg.MaxPayloadBytes)
		chunk, err := g.fsm.ExportMove(e.GetMoveId(), fsm.RangesFromProto(e.GetRanges()), e.GetFrom(), max(maxBytes, 1))
		if err != nil {
			return nil, g.readResult(err)
		}
		return &fsmpb.MoveStepResult{Chunk: chunk.Import, LogEnd: chunk.LogEnd}, nil
	case *fsmpb.MoveStep_ImportState:
		if err := g.readBarrier(ctx, Linearizable); err != nil {
			return nil, err
		}
		st, err := g.fsm.ImportState(s.ImportState)
		return &fsmpb.MoveStepResult{ImportState: st}, g.readResult(err)
	case *fsmpb.MoveStep_Digest:
		if err := fsm.ValidateMoveDigest(s.Digest); err != nil {
			return nil, err
		}
		if err := g.readBarrier(ctx, Linearizable); err != nil {
			return nil, err
		}
		d, logEnd, err := g.fsm.SlotDigests(s.Digest.GetMoveId(), fsm.RangesFromProto(s.Digest.GetRanges()))
		return &fsmpb.MoveStepResult{SlotDigests: d, LogEnd: logEnd}, g.readResult(err)
	case *fsmpb.MoveStep_LogSlots:
		if err := g.readBarrier(ctx, Linearizable); err != nil {
			return nil, err
		}
		ls := s.LogSlots
		slots, truncated, err := g.fsm.MoveLogSlots(ls.GetMoveId(), ls.GetSince(), min(int(ls.GetMaxEntries()), fsm.MaxMoveLogSlotsEntries))
		return &fsmpb.MoveStepResult{LogSlots: slots, LogTruncated: truncated}, g.readResult(err)
	default:
		return nil, fmt.Errorf("%w: unknown move step", fsm.ErrInvalidArgument)
	}
}

// moveStepAt runs a step at the group's leader: here if this node leads
// it, else at the node a not-leader answer names (here or from gossip and
// the map), once.
func (n *Node) moveStepAt(ctx context.Context, group shard.GroupID, step *fsmpb.MoveStep) (*fsmpb.MoveStepResult, error) {
	var res *fsmpb.MoveStepResult
	var remote func(context.Context, string) error
	if c := n.cfg.MoveStepper; c != nil {
		remote = func(ctx context.Context, addr string) (err error) {
			res, err = c(ctx, addr, group, step)
			return err
		}
	}
	err := n.atLeader(ctx, func(ctx context.Context) (err error) {
		res, err = n.MoveStep(ctx, group, step)
		return err
	}, remote)
	return res, err
}
