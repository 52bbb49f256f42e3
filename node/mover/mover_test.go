package mover

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
	"github.com/syncstore/syncstore/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// group is a state machine fed commands as a one-replica log.
type group struct {
	mu   sync.Mutex
	f    *fsm.FSM
	next uint64
}

func (g *group) apply(t *testing.T, cmd *fsmpb.Command) (*fsm.Result, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cmd.NowMs = time.Now().UnixMilli()
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	g.next++
	res := g.f.ApplyBatch([]*raft.Log{{Index: g.next, Term: 1, Type: raft.LogCommand, Data: data}})[0].(*fsm.Result)
	return res, res.Err
}

// fakeCluster is a meta group and two data groups in one process; failAt,
// when set, fails the step of that kind once; beforeStep, when set, runs
// before each step (holding mu); dropImports drops the last item of that many import
// chunks (a copy that loses a key).
type fakeCluster struct {
	t           *testing.T
	meta        *group
	groups      map[shard.GroupID]*group
	mu          sync.Mutex
	failAt      map[string]bool
	steps       map[string]int
	beforeStep  func(step *fsmpb.MoveStep)
	dropImports int
	// fenced is set by a FENCE step; fencedDigestSlots counts the slots
	// digests read after it.
	fenced            bool
	fencedDigestSlots int
}

func newFakeCluster(t *testing.T) *fakeCluster {
	e, err := storage.Open(storage.Options{Dir: t.TempDir(), InitialMmapSize: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	open := func(id uint64) *group {
		st, err := e.State(id)
		if err != nil {
			t.Fatal(err)
		}
		f, err := fsm.Open(fsm.Options{State: st, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return &group{f: f}
	}
	c := &fakeCluster{t: t, meta: open(0), groups: map[shard.GroupID]*group{1: open(1), 2: open(2)}, failAt: map[string]bool{}, steps: map[string]int{}}
	m, err := shard.New(1, []shard.Group{
		{ID: 1, Ranges: []shard.Range{movedSlots}, Replicas: []string{"n1"}},
		{ID: 2, Ranges: []shard.Range{{Start: movedSlots.End, End: shard.SlotCount}}, Replicas: []string{"n1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.meta.apply(t, &fsmpb.Command{Op: &fsmpb.Command_SetShardMap{SetShardMap: &fsmpb.SetShardMap{Map: fsm.ShardMapToProto(m)}}}); err != nil {
		t.Fatal(err)
	}
	for id, g := range c.groups {
		sg, _ := m.Group(id)
		if _, err := g.apply(t, &fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: &fsmpb.SetRanges{MapVersion: 1, Ranges: fsm.RangesToProto(sg.Ranges)}}}); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *fakeCluster) MetaLeader() bool                    { return true }
func (c *fakeCluster) Moves() ([]*fsmpb.MoveRecord, error) { return c.meta.f.Moves() }
func (c *fakeCluster) ProposeMeta(_ context.Context, cmd *fsmpb.Command) (*fsm.Result, error) {
	return c.meta.apply(c.t, cmd)
}

func (c *fakeCluster) Ranges(id shard.GroupID) ([]shard.Range, uint64, bool) {
	m, err := c.meta.f.ShardMap()
	if err != nil || m == nil {
		return nil, 0, false
	}
	g, ok := m.Group(id)
	return g.Ranges, m.Version, ok
}

func (c *fakeCluster) Step(_ context.Context, id shard.GroupID, step *fsmpb.MoveStep) (*fsmpb.MoveStepResult, error) {
	kind := fmt.Sprintf("%T", step.GetStep())
	c.mu.Lock()
	c.steps[kind]++
	fail := c.failAt[kind]
	delete(c.failAt, kind)
	c.mu.Unlock()
	if fail {
		return nil, fmt.Errorf("injected failure of %s", kind)
	}
	c.mu.Lock()
	if c.beforeStep != nil {
		c.beforeStep(step)
	}
	c.mu.Unlock()
	g := c.groups[id]
	switch s := step.GetStep().(type) {
	case *fsmpb.MoveStep_Source:
		_, err := g.apply(c.t, &fsmpb.Command{Op: &fsmpb.Command_MoveSource{MoveSource: s.Source}})
		if err == nil {
			c.mu.Lock()
			c.fenced = s.Source.GetAction() == fsmpb.MoveSource_FENCE
			c.mu.Unlock()
		}
		return &fsmpb.MoveStepResult{}, err
	case *fsmpb.MoveStep_Import:
		c.mu.Lock()
		if n := len(s.Import.GetItems()); c.dropImports > 0 && n > 0 {
			c.dropImports--
			s.Import.Items = s.Import.Items[:n-1]
		}
		c.mu.Unlock()
		res, err := g.apply(c.t, &fsmpb.Command{Op: &fsmpb.Command_MoveImport{MoveImport: s.Import}})
		if err != nil {
			return nil, err
		}
		return &fsmpb.MoveStepResult{ImportState: res.MoveImport}, nil
	case *fsmpb.MoveStep_Cleanup:
		res, err := g.apply(c.t, &fsmpb.Command{Op: &fsmpb.Command_MoveCleanup{MoveCleanup: s.Cleanup}})
		if err != nil {
			return nil, err
		}
		return &fsmpb.MoveStepResult{CleanupDone: res.CleanupDone}, nil
	case *fsmpb.MoveStep_SetRanges:
		_, err := g.apply(c.t, &fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: s.SetRanges}})
		return &fsmpb.MoveStepResult{}, err
	case *fsmpb.MoveStep_Export:
		e := s.Export
		chunk, err := g.f.ExportMove(e.GetMoveId(), fsm.RangesFromProto(e.GetRanges()), e.GetFrom(), int(e.GetMaxBytes()))
		if err != nil {
			return nil, err
		}
		return &fsmpb.MoveStepResult{Chunk: chunk.Import, LogEnd: chunk.LogEnd}, nil
	case *fsmpb.MoveStep_ImportState:
		st, err := g.f.ImportState(s.ImportState)
		return &fsmpb.MoveStepResult{ImportState: st}, err
	case *fsmpb.MoveStep_Digest:
		if err := fsm.ValidateMoveDigest(s.Digest); err != nil {
			return nil, err
		}
		ranges := fsm.RangesFromProto(s.Digest.GetRanges())
		c.mu.Lock()
		if c.fenced {
			c.fencedDigestSlots += shard.Slots(ranges)
		}
		c.mu.Unlock()
		d, end, err := g.f.SlotDigests(s.Digest.GetMoveId(), ranges)
		return &fsmpb.MoveStepResult{SlotDigests: d, LogEnd: end}, err
	case *fsmpb.MoveStep_LogSlots:
		slots, truncated, err := g.f.MoveLogSlots(s.LogSlots.GetMoveId(), s.LogSlots.GetSince(), int(s.LogSlots.GetMaxEntries()))
		return &fsmpb.MoveStepResult{LogSlots: slots, LogTruncated: truncated}, err
	}
	return nil, fmt.Errorf("unknown step %s", kind)
}

func (c *fakeCluster) appendTo(t *testing.T, id shard.GroupID, tl string, n int) {
	t.Helper()
	for i := range n {
		if _, err := c.groups[id].apply(t, &fsmpb.Command{Op: &fsmpb.Command_Append{Append: &fsmpb.Append{
			Timeline: tl, Payload: []byte("p"), IdempotencyKey: fmt.Sprintf("%s-%d", tl, i), DedupeWindowMs: 60000,
		}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// movedSlots are group 1's, which the tests move to group 2.
var movedSlots = shard.Range{Start: 0, End: 4000}

// users are timelines in movedSlots.
func users(n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		if tl := fmt.Sprintf("u%d", i); uint32(shard.SlotOf(tl)) < movedSlots.End {
			out = append(out, tl)
		}
	}
	return out
}

func plan(t *testing.T, c *fakeCluster, r shard.Range, target shard.GroupID) uint64 {
	t.Helper()
	res, err := c.meta.apply(t, &fsmpb.Command{Op: &fsmpb.Command_MovePlan{MovePlan: &fsmpb.MovePlan{Ranges: fsm.RangesToProto([]shard.Range{r}), Target: uint64(target)}}})
	if err != nil {
		t.Fatal(err)
	}
	return res.MoveID
}

func phase(t *testing.T, c *fakeCluster, id uint64) fsmpb.MovePhase {
	t.Helper()
	recs, err := c.Moves()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.GetId() == id {
			return r.GetPhase()
		}
	}
	t.Fatalf("no move %d", id)
	return 0
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.ChunkBytes = 256
	cfg.Retry = time.Millisecond
	return cfg
}

// TestDrivesAMoveThroughEveryPhaseDespiteFailures: a step failing once at
// each point of the move leaves it where it was; driving again (as a new
// meta leader would, with a new mover) takes it to cleaned, the target
// owning and holding the range and the source neither.
func TestDrivesAMoveThroughEveryPhaseDespiteFailures(t *testing.T) {
	for _, failing := range []string{"*fsmpb.MoveStep_Source", "*fsmpb.MoveStep_Export", "*fsmpb.MoveStep_Import", "*fsmpb.MoveStep_Digest", "*fsmpb.MoveStep_SetRanges", "*fsmpb.MoveStep_Cleanup"} {
		t.Run(failing, func(t *testing.T) {
			c := newFakeCluster(t)
			moved := movedSlots
			for _, u := range users(40) {
				c.appendTo(t, 1, u, 5)
			}
			id := plan(t, c, moved, 2)
			c.failAt[failing] = true
			ctx := context.Background()
			m := New(c, testConfig())
			m.driveAll(ctx)
			// A refused chunk is retried in the copy from the target's
			// cursor; any other failure stops the drive where it was.
			if p := phase(t, c, id); p == fsmpb.MovePhase_CLEANED && failing != "*fsmpb.MoveStep_Import" {
				t.Fatalf("the move finished although %s failed", failing)
			}
			New(c, testConfig()).driveAll(ctx) // a new meta leader takes over
			if p := phase(t, c, id); p != fsmpb.MovePhase_CLEANED {
				t.Fatalf("after the takeover the move is %s", fsm.PhaseName(p))
			}
			if _, keys, _ := c.groups[1].f.RangeDigest([]shard.Range{moved}); keys != 0 {
				t.Fatalf("the source still holds %d keys", keys)
			}
			if _, keys, _ := c.groups[2].f.RangeDigest([]shard.Range{moved}); keys == 0 {
				t.Fatal("the target holds nothing")
			}
			if r, _, _, _ := c.groups[2].f.OwnedRanges(); len(r) != 1 || r[0] != (shard.Range{Start: 0, End: shard.SlotCount}) {
				t.Fatalf("the target owns %v", r)
			}
			if head, _ := c.groups[2].f.Head(users(4)[3]); head != 5 {
				t.Fatalf("a moved timeline at the target has head %d, want 5", head)
			}
		})
	}
}

// TestAbortUndoesTheCopy: a move asked to abort after its copy began ends
// aborted, the target holding nothing of the range and the source owning
// and taking writes to it again.
func TestAbortUndoesTheCopy(t *testing.T) {
	c := newFakeCluster(t)
	moved := movedSlots
	for _, u := range users(40) {
		c.appendTo(t, 1, u, 5)
	}
	id := plan(t, c, moved, 2)
	cfg := testConfig()
	aborted := false
	cfg.OnChunk = func(uint64, bool, *fsmpb.MoveImportState) {
		if !aborted {
			aborted = true
			if _, err := c.meta.apply(t, &fsmpb.Command{Op: &fsmpb.Command_MoveUpdate{MoveUpdate: &fsmpb.MoveUpdate{Id: id, Abort: true}}}); err != nil {
				t.Error(err)
			}
		}
	}
	cfg.ProgressEvery = 0 // look at the record after every chunk
	New(c, cfg).driveAll(context.Background())
	New(c, cfg).driveAll(context.Background())
	if p := phase(t, c, id); p != fsmpb.MovePhase_ABORTED {
		t.Fatalf("the move is %s, want aborted", fsm.PhaseName(p))
	}
	if _, keys, _ := c.groups[2].f.RangeDigest([]shard.Range{moved}); keys != 0 {
		t.Fatalf("the target kept %d keys of an aborted move", keys)
	}
	u := users(4)[3]
	c.appendTo(t, 1, u, 6) // 5 retried (deduplicated), one new
	if head, _ := c.groups[1].f.Head(u); head != 6 {
		t.Fatalf("%s at the source has head %d, want 6", u, head)
	}
}

// TestCheckAbortsACopyThatDiffers: a key lost by the copy aborts the move,
// whether the loss is in a slot the source did not change after the check
// before the fence (found then) or in one it changed after it (found by the
// check while fenced, which reads only such slots); a copy that lost
// nothing reads, while fenced, only the slots changed since.
func TestCheckAbortsACopyThatDiffers(t *testing.T) {
	late := users(41)[40] // a timeline first written after the check before the fence
	cases := []struct {
		name      string
		lostEarly bool // a key of the bulk copy is lost
		lostLate  bool // the late write's key is lost
		wantPhase fsmpb.MovePhase
		maxFenced int // slots the check while fenced may read
	}{
		{"nothing lost", false, false, fsmpb.MovePhase_CLEANED, 1},
		{"lost before the check", true, false, fsmpb.MovePhase_ABORTED, 2},
		{"lost after the check", false, true, fsmpb.MovePhase_ABORTED, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeCluster(t)
			for _, u := range users(40) {
				c.appendTo(t, 1, u, 5)
			}
			id := plan(t, c, movedSlots, 2)
			if tc.lostEarly {
				c.dropImports = 1
			}
			targetDigests, written := 0, false
			c.beforeStep = func(step *fsmpb.MoveStep) {
				d := step.GetDigest()
				if d == nil || d.GetMoveId() != 0 || c.fenced {
					return
				}
				// The last of the target's digests before the fence: the
				// source takes a write (to a slot checked already).
				if targetDigests++; targetDigests == len(pieces([]shard.Range{movedSlots}, testConfig().VerifySlots)) && !written {
					written = true
					c.appendTo(t, 1, late, 1)
					if tc.lostLate {
						c.dropImports = 1
					}
				}
			}
			New(c, testConfig()).driveAll(context.Background())
			New(c, testConfig()).driveAll(context.Background())
			if !written {
				t.Fatal("the test's write after the check before the fence did not happen")
			}
			if p := phase(t, c, id); p != tc.wantPhase {
				t.Fatalf("the move is %s, want %s", fsm.PhaseName(p), fsm.PhaseName(tc.wantPhase))
			}
			if c.fencedDigestSlots > 2*tc.maxFenced {
				t.Fatalf("the check while fenced read %d slots (source and target), want at most %d", c.fencedDigestSlots, 2*tc.maxFenced)
			}
		})
	}
}
