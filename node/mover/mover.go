// Package mover drives slot moves on the meta group's leader: each move
// recorded in the meta group goes planned -> fenced -> copied -> switched
// -> cleaned (or to aborted before the switch), every step idempotent and
// checked against the recorded phase, so a new meta leader resumes a move
// where the last one left it.
package mover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// Cluster is what the mover needs of its node.
type Cluster interface {
	// MetaLeader reports whether this node leads the meta group.
	MetaLeader() bool
	// Moves lists the move records of this node's meta replica.
	Moves() ([]*fsmpb.MoveRecord, error)
	// ProposeMeta replicates a command through the meta group.
	ProposeMeta(ctx context.Context, cmd *fsmpb.Command) (*fsm.Result, error)
	// Step runs a move step at a data group's leader.
	Step(ctx context.Context, group shard.GroupID, step *fsmpb.MoveStep) (*fsmpb.MoveStepResult, error)
	// Ranges returns a group's slot ranges in this node's newest shard map
	// and that map's version.
	Ranges(group shard.GroupID) ([]shard.Range, uint64, bool)
}

// Config tunes the mover.
type Config struct {
	// ChunkBytes bounds the keys one export carries (one Raft entry at the
	// target).
	ChunkBytes int
	// FenceLag: the copy fences the source once it is this few move-log
	// entries behind it.
	FenceLag uint64
	// MaxPasses bounds the log passes before fencing: a source written
	// faster than it is copied is fenced anyway.
	MaxPasses int
	// Verify compares the ranges' digests at source and target, slot by
	// slot, before the switch (see verify.go).
	Verify bool
	// VerifySlots is how many slots one digest read covers (one read
	// transaction at the source or target).
	VerifySlots int
	// ProgressEvery is how often progress goes to the move record.
	ProgressEvery time.Duration
	// Retry is the wait after a failed step.
	Retry time.Duration
	// CleanupKeys is how many keys one clean-up command deletes.
	CleanupKeys uint32
	// Observe, if set, is told of each move's unavailability (fence to
	// switch) when it switches.
	Observe func(id uint64, fenced time.Duration)
	// OnChunk, if set, is called after each chunk the target imported
	// (tests: a fault at a chosen point of the copy).
	OnChunk func(id uint64, fenced bool, st *fsmpb.MoveImportState)
	Logger  *slog.Logger
}

// DefaultConfig is the mover's configuration unless tuned.
func DefaultConfig() Config {
	return Config{
		ChunkBytes:    512 << 10,
		FenceLag:      256,
		MaxPasses:     64,
		Verify:        true,
		VerifySlots:   64,
		ProgressEvery: time.Second,
		Retry:         500 * time.Millisecond,
		CleanupKeys:   4096,
	}
}

// Mover drives the cluster's moves while its node leads the meta group.
type Mover struct {
	c       Cluster
	cfg     Config
	log     *slog.Logger
	kick    chan struct{}
	resumed map[uint64]bool
	// pre holds each move's check made before its fence, for the check
	// while fenced (lost with the meta leadership: then the whole range
	// is checked while fenced).
	pre map[uint64]*preCheck
	// leaderSince is when this node last became the meta leader: a move
	// recorded before it was taken over from an earlier leader.
	leaderSince time.Time
}

// New returns a mover; Run drives it.
func New(c Cluster, cfg Config) *Mover {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mover{c: c, cfg: cfg, log: log, kick: make(chan struct{}, 1), resumed: map[uint64]bool{}, pre: map[uint64]*preCheck{}}
}

// Kick makes Run look at the moves now rather than at its next tick.
func (m *Mover) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// errNotLeader stops a drive when this node no longer leads the meta group.
var errNotLeader = errors.New("mover: no longer the meta leader")

// Run drives moves until ctx ends, one move at a time in id order.
func (m *Mover) Run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if m.c.MetaLeader() {
			if m.leaderSince.IsZero() {
				m.leaderSince = time.Now()
			}
			m.driveAll(ctx)
		} else {
			clear(m.resumed)
			m.leaderSince = time.Time{}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-m.kick:
		}
	}
}

func (m *Mover) driveAll(ctx context.Context) {
	recs, err := m.c.Moves()
	if err != nil {
		m.log.Warn("read moves", "err", err)
		return
	}
	for _, rec := range recs {
		if fsm.MoveFinal(rec.GetPhase()) {
			continue
		}
		if err := m.drive(ctx, rec); err != nil {
			if ctx.Err() == nil && !errors.Is(err, errNotLeader) {
				m.log.Warn("move", "id", rec.GetId(), "phase", fsm.PhaseName(rec.GetPhase()), "err", err)
				m.note(ctx, rec.GetId(), err)
				m.wait(ctx, m.cfg.Retry)
			}
			return // one move at a time: the next round retries this one
		}
	}
}

func (m *Mover) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// record re-reads a move from the meta replica.
func (m *Mover) record(id uint64) (*fsmpb.MoveRecord, error) {
	recs, err := m.c.Moves()
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.GetId() == id {
			return r, nil
		}
	}
	return nil, fmt.Errorf("%w: %d", fsm.ErrUnknownMove, id)
}

// drive takes one move through its remaining phases.
func (m *Mover) drive(ctx context.Context, rec *fsmpb.MoveRecord) error {
	if !m.resumed[rec.GetId()] {
		m.resumed[rec.GetId()] = true
		if rec.GetCreatedMs() < m.leaderSince.UnixMilli() {
			m.log.Info("resuming move", "id", rec.GetId(), "phase", fsm.PhaseName(rec.GetPhase()))
			if err := m.update(ctx, rec, rec.GetPhase(), rec.GetPhase(), nil, true); err != nil {
				return err
			}
		}
	}
	for !fsm.MoveFinal(rec.GetPhase()) {
		if !m.c.MetaLeader() {
			return errNotLeader
		}
		var err error
		if rec.GetAbortRequested() && rec.GetPhase() != fsmpb.MovePhase_SWITCHED {
			err = m.abort(ctx, rec)
		} else {
			err = m.advance(ctx, rec)
		}
		if err != nil {
			return err
		}
		if rec, err = m.record(rec.GetId()); err != nil {
			return err
		}
	}
	delete(m.pre, rec.GetId())
	m.log.Info("move done", "id", rec.GetId(), "phase", fsm.PhaseName(rec.GetPhase()), "records", rec.GetRecords(), "bytes", rec.GetBytes())
	return nil
}

// advance takes the move one phase further.
func (m *Mover) advance(ctx context.Context, rec *fsmpb.MoveRecord) error {
	src, dst := shard.GroupID(rec.GetSource()), shard.GroupID(rec.GetTarget())
	switch rec.GetPhase() {
	case fsmpb.MovePhase_PLANNED:
		if err := m.source(ctx, rec, fsmpb.MoveSource_TRACK); err != nil {
			return err
		}
		m.log.Info("move copying", "id", rec.GetId(), "ranges", rec.GetRanges(), "from", src, "to", dst)
		st, err := m.copy(ctx, rec, false, 0)
		if err != nil {
			return err
		}
		if m.cfg.Verify {
			pre, err := m.checkBeforeFence(ctx, rec)
			if err != nil {
				return err
			}
			// The check let the source run ahead: catch up again, so
			// that the fence is short.
			if st, err = m.copy(ctx, rec, false, 0); err != nil {
				return err
			}
			m.pre[rec.GetId()] = pre
		}
		if err := m.source(ctx, rec, fsmpb.MoveSource_FENCE); err != nil {
			return err
		}
		return m.update(ctx, rec, fsmpb.MovePhase_PLANNED, fsmpb.MovePhase_FENCED, st, false)
	case fsmpb.MovePhase_FENCED:
		if err := m.source(ctx, rec, fsmpb.MoveSource_FENCE); err != nil {
			return err
		}
		start := time.Now()
		st, err := m.copy(ctx, rec, true, 0)
		if err != nil {
			return err
		}
		copied := time.Now()
		if m.cfg.Verify {
			if err := m.checkWhileFenced(ctx, rec, m.pre[rec.GetId()]); err != nil {
				return err
			}
		}
		m.log.Info("move caught up while fenced", "id", rec.GetId(), "copy", copied.Sub(start), "check", time.Since(copied))
		return m.update(ctx, rec, fsmpb.MovePhase_FENCED, fsmpb.MovePhase_COPIED, st, false)
	case fsmpb.MovePhase_COPIED:
		if _, err := m.c.ProposeMeta(ctx, &fsmpb.Command{Op: &fsmpb.Command_MoveSwitch{MoveSwitch: &fsmpb.MoveSwitch{Id: rec.GetId()}}}); err != nil {
			return fmt.Errorf("switch: %w", err)
		}
		return nil
	case fsmpb.MovePhase_SWITCHED:
		return m.finish(ctx, rec)
	}
	return fmt.Errorf("move %d in phase %v", rec.GetId(), rec.GetPhase())
}

// finish makes the source give the switched ranges up, then hands them to
// the target at once (the reconciler would too, a round later) and
// activates them there, and deletes them at the source. The order is what
// keeps reads linearizable: the target serves nothing of the ranges until
// the source has stopped serving them.
func (m *Mover) finish(ctx context.Context, rec *fsmpb.MoveRecord) error {
	dst := shard.GroupID(rec.GetTarget())
	release := &fsmpb.MoveSource{MoveId: rec.GetId(), Ranges: rec.GetRanges(), Action: fsmpb.MoveSource_RELEASE, Disown: true, MapVersion: rec.GetSwitchedMapVersion()}
	if _, err := m.c.Step(ctx, shard.GroupID(rec.GetSource()), &fsmpb.MoveStep{Step: &fsmpb.MoveStep_Source{Source: release}}); err != nil {
		return fmt.Errorf("release the source: %w", err)
	}
	ranges, version, ok := m.c.Ranges(dst)
	if !ok || version < rec.GetSwitchedMapVersion() {
		return fmt.Errorf("the shard map here is older than the switch (v%d)", rec.GetSwitchedMapVersion())
	}
	if _, err := m.c.Step(ctx, dst, &fsmpb.MoveStep{Step: &fsmpb.MoveStep_SetRanges{SetRanges: &fsmpb.SetRanges{MapVersion: version, Ranges: fsm.RangesToProto(ranges)}}}); err != nil {
		return fmt.Errorf("give the target its ranges: %w", err)
	}
	activate := &fsmpb.MoveSource{MoveId: rec.GetId(), Ranges: rec.GetRanges(), Action: fsmpb.MoveSource_ACTIVATE}
	if _, err := m.c.Step(ctx, dst, &fsmpb.MoveStep{Step: &fsmpb.MoveStep_Source{Source: activate}}); err != nil {
		return fmt.Errorf("activate the target: %w", err)
	}
	if rec.GetFencedMs() > 0 && m.cfg.Observe != nil {
		m.cfg.Observe(rec.GetId(), time.Duration(rec.GetSwitchedMs()-rec.GetFencedMs())*time.Millisecond)
	}
	if err := m.cleanup(ctx, rec, fsmpb.MoveCleanup_SOURCE); err != nil {
		return err
	}
	return m.update(ctx, rec, fsmpb.MovePhase_SWITCHED, fsmpb.MovePhase_CLEANED, nil, false)
}

// abort undoes a move before its switch: the source takes writes again and
// drops its move log, the target deletes what it imported.
func (m *Mover) abort(ctx context.Context, rec *fsmpb.MoveRecord) error {
	m.log.Info("aborting move", "id", rec.GetId(), "phase", fsm.PhaseName(rec.GetPhase()))
	if err := m.source(ctx, rec, fsmpb.MoveSource_RELEASE); err != nil {
		return err
	}
	if err := m.cleanup(ctx, rec, fsmpb.MoveCleanup_TARGET); err != nil {
		return err
	}
	if err := m.cleanup(ctx, rec, fsmpb.MoveCleanup_SOURCE); err != nil {
		return err
	}
	return m.update(ctx, rec, rec.GetPhase(), fsmpb.MovePhase_ABORTED, nil, false)
}

func (m *Mover) source(ctx context.Context, rec *fsmpb.MoveRecord, action fsmpb.MoveSource_Action) error {
	_, err := m.c.Step(ctx, shard.GroupID(rec.GetSource()), &fsmpb.MoveStep{Step: &fsmpb.MoveStep_Source{Source: &fsmpb.MoveSource{
		MoveId: rec.GetId(), Ranges: rec.GetRanges(), Action: action,
	}}})
	if err != nil {
		return fmt.Errorf("%s at source group %d: %w", action, rec.GetSource(), err)
	}
	return nil
}

func (m *Mover) cleanup(ctx context.Context, rec *fsmpb.MoveRecord, side fsmpb.MoveCleanup_Side) error {
	group := shard.GroupID(rec.GetSource())
	if side == fsmpb.MoveCleanup_TARGET {
		group = shard.GroupID(rec.GetTarget())
	}
	for {
		if !m.c.MetaLeader() {
			return errNotLeader
		}
		res, err := m.c.Step(ctx, group, &fsmpb.MoveStep{Step: &fsmpb.MoveStep_Cleanup{Cleanup: &fsmpb.MoveCleanup{
			MoveId: rec.GetId(), Ranges: rec.GetRanges(), Side: side, MaxKeys: m.cfg.CleanupKeys,
		}}})
		if err != nil {
			return fmt.Errorf("clean up group %d: %w", group, err)
		}
		if res.GetCleanupDone() {
			return nil
		}
	}
}

// update proposes a phase step (or, with from == to, progress only).
func (m *Mover) update(ctx context.Context, rec *fsmpb.MoveRecord, from, to fsmpb.MovePhase, st *fsmpb.MoveImportState, resumed bool) error {
	u := &fsmpb.MoveUpdate{Id: rec.GetId(), From: from, To: to, Resumed: resumed}
	if st != nil {
		u.Records, u.Bytes = st.GetRecords(), st.GetBytes()
	}
	if _, err := m.c.ProposeMeta(ctx, &fsmpb.Command{Op: &fsmpb.Command_MoveUpdate{MoveUpdate: u}}); err != nil {
		return fmt.Errorf("record move %d %s -> %s: %w", rec.GetId(), fsm.PhaseName(from), fsm.PhaseName(to), err)
	}
	if from != to {
		m.log.Info("move", "id", rec.GetId(), "phase", fsm.PhaseName(to))
	}
	return nil
}

// note records the error a move's last attempt met (best effort).
func (m *Mover) note(ctx context.Context, id uint64, err error) {
	rec, rerr := m.record(id)
	if rerr != nil {
		return
	}
	msg := err.Error()
	if len(msg) > fsm.MaxMoveNoteBytes {
		msg = msg[:fsm.MaxMoveNoteBytes]
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m.c.ProposeMeta(ctx, &fsmpb.Command{Op: &fsmpb.Command_MoveUpdate{MoveUpdate: &fsmpb.MoveUpdate{
		Id: id, From: rec.GetPhase(), To: rec.GetPhase(), Note: msg, Records: rec.GetRecords(), Bytes: rec.GetBytes(),
	}}})
}
