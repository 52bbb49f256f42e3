package mover

import (
	"context"
	"fmt"
	"time"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// copy moves chunks from the source's leader to the target's through the
// target's log, from where the target stands, until the target has caught
// up with the source's move log: to within FenceLag entries (or after
// MaxPasses passes over the log) while the source takes writes, exactly
// once it is fenced; and, before the fence, at least to log position
// atLeast.
func (m *Mover) copy(ctx context.Context, rec *fsmpb.MoveRecord, fenced bool, atLeast uint64) (*fsmpb.MoveImportState, error) {
	src, dst := shard.GroupID(rec.GetSource()), shard.GroupID(rec.GetTarget())
	st, err := m.importState(ctx, rec)
	if err != nil {
		return nil, err
	}
	cursor := st.GetCursor()
	if cursor == nil {
		cursor = &fsmpb.MoveCursor{}
	}
	lastProgress, passStart := time.Now(), uint64(0)
	passes, refused := 0, 0
	for {
		if !m.c.MetaLeader() {
			return nil, errNotLeader
		}
		if time.Since(lastProgress) >= m.cfg.ProgressEvery {
			lastProgress = time.Now()
			cur, err := m.record(rec.GetId())
			if err != nil {
				return nil, err
			}
			if cur.GetAbortRequested() {
				return nil, fmt.Errorf("abort requested")
			}
			if err := m.update(ctx, rec, rec.GetPhase(), rec.GetPhase(), st, false); err != nil {
				return nil, err
			}
		}
		res, err := m.c.Step(ctx, src, &fsmpb.MoveStep{Step: &fsmpb.MoveStep_Export{Export: &fsmpb.MoveExport{
			MoveId: rec.GetId(), Ranges: rec.GetRanges(), From: cursor, MaxBytes: uint32(m.cfg.ChunkBytes),
		}}})
		if err != nil {
			return nil, fmt.Errorf("export from group %d: %w", src, err)
		}
		imp, err := m.c.Step(ctx, dst, &fsmpb.MoveStep{Step: &fsmpb.MoveStep_Import{Import: res.GetChunk()}})
		if err != nil {
			// A chunk that met another cursor (a retry after an unknown
			// outcome, another leader's copy) wrote nothing: go on from
			// where the target stands.
			m.log.Info("import refused: resuming from the target's cursor", "id", rec.GetId(), "err", err)
			if refused++; refused >= maxRefusedImports {
				return nil, fmt.Errorf("import into group %d refused %d times in a row: %w", dst, refused, err)
			}
			if st, err = m.importState(ctx, rec); err != nil {
				return nil, err
			}
			cursor = st.GetCursor()
			continue
		}
		st, refused = imp.GetImportState(), 0
		cursor = st.GetCursor()
		if m.cfg.OnChunk != nil {
			m.cfg.OnChunk(rec.GetId(), fenced, st)
		}
		if !cursor.GetBulkDone() {
			continue
		}
		lag := res.GetLogEnd() - min(res.GetLogEnd(), cursor.GetLogPos())
		if lag == 0 {
			return st, nil
		}
		if cursor.GetLogPos() >= passStart && res.GetChunk().GetTo().GetLogPos() >= res.GetLogEnd() {
			passes++
			passStart = res.GetLogEnd()
		}
		if !fenced && cursor.GetLogPos() >= atLeast && (lag <= m.cfg.FenceLag || passes >= m.cfg.MaxPasses) {
			return st, nil
		}
	}
}

// maxRefusedImports: after this many refused chunks in a row the copy
// stops and the move is retried after a pause (a target that refuses
// every chunk, e.g. not yet told its ranges, is not spun on).
const maxRefusedImports = 3

func (m *Mover) importState(ctx context.Context, rec *fsmpb.MoveRecord) (*fsmpb.MoveImportState, error) {
	res, err := m.c.Step(ctx, shard.GroupID(rec.GetTarget()), &fsmpb.MoveStep{Step: &fsmpb.MoveStep_ImportState{ImportState: rec.GetId()}})
	if err != nil {
		return nil, fmt.Errorf("import state at group %d: %w", rec.GetTarget(), err)
	}
	st := res.GetImportState()
	if st.GetClosed() {
		return nil, fmt.Errorf("move %d was aborted at the target", rec.GetId())
	}
	return st, nil
}
