package inproc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/shard"
)

const moveGroups = 4

// moveRecord reads a move from the meta leader's replica.
func moveRecord(t *testing.T, c *testcluster.Cluster, id uint64) *fsmpb.MoveRecord {
	t.Helper()
	for _, m := range c.Members {
		if m.Node == nil {
			continue
		}
		recs, err := m.Node.Moves()
		if err != nil {
			continue
		}
		for _, r := range recs {
			if r.GetId() == id {
				return r
			}
		}
	}
	return nil
}

// planMove plans a move at the meta leader.
func planMove(t *testing.T, c *testcluster.Cluster, ranges []shard.Range, target shard.GroupID) uint64 {
	t.Helper()
	var id uint64
	testutil.Eventually(t, 30*time.Second, func() error {
		l := c.WaitLeader(30 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		id, err = c.Members[l].Node.PlanMove(ctx, ranges, target, "test")
		return err
	})
	return id
}

// waitPhase waits until the move reaches phase (or any final phase).
func waitPhase(t *testing.T, c *testcluster.Cluster, id uint64, phase fsmpb.MovePhase, timeout time.Duration) *fsmpb.MoveRecord {
	t.Helper()
	var rec *fsmpb.MoveRecord
	testutil.Eventually(t, timeout, func() error {
		rec = moveRecord(t, c, id)
		switch {
		case rec == nil:
			return fmt.Errorf("no move %d", id)
		case rec.GetPhase() == phase || fsm.MoveFinal(rec.GetPhase()):
			return nil
		}
		return fmt.Errorf("move %d is %s (%d records, note %q)", id, fsm.PhaseName(rec.GetPhase()), rec.GetRecords(), rec.GetNote())
	})
	if rec.GetPhase() != phase {
		t.Fatalf("move %d ended %s, want %s (note %q)", id, fsm.PhaseName(rec.GetPhase()), fsm.PhaseName(phase), rec.GetNote())
	}
	return rec
}

// TestSlotMoveUnderLoadWithSourceLeaderKilled: every slot of one group
// moves to another while 16 writers append to 500 timelines, and the
// source group's leader is killed during the copy. Afterwards every
// timeline is exactly 1..head with every acknowledged append once, on
// every replica, and the source group owns nothing.
func TestSlotMoveUnderLoadWithSourceLeaderKilled(t *testing.T) {
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) {
		cfg.Shards = moveGroups
		cfg.MoveChunkBytes = 16 << 10 // many chunks: the kill lands mid-copy
	})
	var names []string
	for i := range 500 {
		names = append(names, fmt.Sprintf("mv-%d", i))
	}
	w := startWorkload(t, c.Client(), "move", 16, names, 5*time.Second)
	w.progress(t, 3000)

	smap := c.Members[0].Node.ShardMap()
	src, dst := shard.GroupID(1), shard.GroupID(2)
	sg, _ := smap.Group(src)
	id := planMove(t, c, sg.Ranges, dst)

	// Kill the source's leader once the copy is under way.
	testutil.Eventually(t, 30*time.Second, func() error {
		if rec := moveRecord(t, c, id); rec.GetRecords() == 0 && rec.GetPhase() == fsmpb.MovePhase_PLANNED {
			return fmt.Errorf("copy not started: %+v", rec)
		}
		return nil
	})
	victim := c.WaitGroupLeader(src, 30*time.Second)
	t.Logf("killing %s, leader of source group %d, during the copy: %v", c.Members[victim].ID, src, moveRecord(t, c, id))
	c.Kill(victim)
	rec := waitPhase(t, c, id, fsmpb.MovePhase_CLEANED, 120*time.Second)
	t.Logf("move %d: %d records, %d bytes, fenced for %d ms, resumes %d", id, rec.GetRecords(), rec.GetBytes(), rec.GetSwitchedMs()-rec.GetFencedMs(), rec.GetResumes())
	c.Restart(victim)
	w.progress(t, 2000)
	w.finish()
	c.WaitConverged(60 * time.Second)

	final := c.Members[0].Node.ShardMap()
	if g, _ := final.Group(src); len(g.Ranges) != 0 {
		t.Fatalf("source group %d still owns %v", src, g.Ranges)
	}
	t.Logf("acknowledged %d appends; writers saw %d errors; %d retries deduplicated", w.acked.Load(), w.errors.Load(), w.deduped.Load())
	checkHistory(t, c, names, w.acks, w.attempted)
	_ = client.Linearizable
}
