package inproc

import (
	"context"
	"fmt"
	"slices"

	"sync"
	"testing"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
	"google.golang.org/protobuf/proto"
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
// moves to another on three nodes while 16 writers append to 500
// timelines and 2 Subscribe consumers follow them all, and the source
// group's leader is killed during the copy. Afterwards: every timeline is
// exactly 1..head with every acknowledged append once, on every replica;
// each consumer got each seq exactly once; a retried append gets its
// original seq; collections and device sessions moved with their versions
// and go on from them; the source group owns and holds nothing.
func TestSlotMoveUnderLoadWithSourceLeaderKilled(t *testing.T) {
	killAt := make(chan struct{})
	var once sync.Once
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) {
		cfg.Shards = moveGroups
		cfg.MoveChunkBytes = 8 << 10 // many chunks: the kill lands mid-copy
		cfg.OnMoveChunk = func(_ uint64, fenced bool, st *fsmpb.MoveImportState) {
			if !fenced && st.GetRecords() > 2000 {
				once.Do(func() { close(killAt) })
			}
		}
	})
	src, dst := shard.GroupID(1), shard.GroupID(2)
	smap := c.Members[0].Node.ShardMap()
	names := numbered("mv-%d", 500)
	before := moveFixture(t, c, smap, src)
	consumers := []*consumer{startConsumer(t, c, names), startConsumer(t, c, names)}
	w := startWorkload(t, c.Client(), "move", 16, names, 5*time.Second)
	probeClient := c.ClientWith(client.Options{AttemptTimeout: 200 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	probeTL := timelineIn(smap, src, "probe")
	probe := startWorkload(t, probeClient, "probe", 1, []string{probeTL}, 10*time.Second)
	w.progress(t, 3000)

	sg, _ := smap.Group(src)
	start := time.Now()
	id := planMove(t, c, sg.Ranges, dst)
	select {
	case <-killAt:
	case <-time.After(60 * time.Second):
		t.Fatalf("the copy never passed 2000 records: %v", moveRecord(t, c, id))
	}
	victim := c.WaitGroupLeader(src, 30*time.Second)
	t.Logf("killing %s, leader of source group %d, during the copy: %v", c.Members[victim].ID, src, moveRecord(t, c, id))
	c.Kill(victim)
	rec := waitPhase(t, c, id, fsmpb.MovePhase_CLEANED, 120*time.Second)
	done := time.Now()
	c.Restart(victim)
	w.progress(t, 1000)
	probe.progress(t, 20)
	w.finish()
	probe.finish()
	c.WaitConverged(60 * time.Second)

	// The moved slots' unavailability: the longest time without an
	// acknowledged write to them from the fence on (before it, the kill's
	// election is the source group's, not the move's).
	fenced := time.UnixMilli(rec.GetFencedMs())
	t.Logf("move %d: %d records, %d bytes in %v; fenced to switch %d ms; meta leader takeovers %d; longest gap of writes to the moved slots from the fence: %v (whole move, with the kill: %v)",
		id, rec.GetRecords(), rec.GetBytes(), done.Sub(start).Round(time.Millisecond), rec.GetSwitchedMs()-rec.GetFencedMs(), rec.GetResumes(),
		probe.longestGap(fenced, done), probe.longestGap(start, done))
	final := c.Members[0].Node.ShardMap()
	if g, _ := final.Group(src); len(g.Ranges) != 0 {
		t.Fatalf("source group %d still owns %v", src, g.Ranges)
	}
	for k, a := range probe.acks {
		w.acks[k] = a
	}
	for k, tl := range probe.attempted {
		w.attempted[k] = tl
	}
	t.Logf("acknowledged %d appends; writers saw %d errors; %d retries deduplicated", w.acked.Load(), w.errors.Load(), w.deduped.Load())
	checkHistory(t, c, append(names, probeTL), w.acks, w.attempted)
	heads := map[string]uint64{}
	for _, a := range w.acks {
		if a.timeline != probeTL {
			heads[a.timeline] = max(heads[a.timeline], a.seq)
		}
	}
	for i, cs := range consumers {
		cs.check(t, i, heads)
	}
	checkDedupeAfterMove(t, c, final, dst, w)
	before.check(t, c)
	checkSourceEmpty(t, c, src, sg.Ranges)
}

// consumer follows timelines with a Subscription and records what it got.
type consumer struct {
	sub  *client.Subscription
	mu   sync.Mutex
	got  map[string][]uint64
	dups int
	done chan struct{}
}

func startConsumer(t *testing.T, c *testcluster.Cluster, names []string) *consumer {
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := c.Client().Subscribe(ctx, client.SubscribeOptions{Buffer: 1024})
	if err != nil {
		t.Fatal(err)
	}
	cs := &consumer{sub: sub, got: map[string][]uint64{}, done: make(chan struct{})}
	for _, tl := range names {
		if err := sub.Add(tl, 0); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		defer close(cs.done)
		for ev := range sub.Events() {
			if ev.Entry == nil {
				continue
			}
			cs.mu.Lock()
			cs.got[ev.Timeline] = append(cs.got[ev.Timeline], ev.Entry.GetSeq())
			cs.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		sub.Close()
		cancel()
		<-cs.done
	})
	return cs
}

// check waits until the consumer has every timeline up to its head, then
// checks it got 1..head, each seq once.
func (cs *consumer) check(t *testing.T, i int, heads map[string]uint64) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, func() error {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		for tl, head := range heads {
			if n := len(cs.got[tl]); uint64(n) < head {
				return fmt.Errorf("consumer %d has %d of %d entries of %s", i, n, head, tl)
			}
		}
		return nil
	})
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for tl, seqs := range cs.got {
		for j, s := range seqs {
			if s != uint64(j+1) {
				t.Fatalf("consumer %d: %s: entry %d has seq %d (seqs %v)", i, tl, j, s, seqs[max(0, j-3):min(len(seqs), j+3)])
			}
		}
	}
}

// checkDedupeAfterMove retries acknowledged appends of timelines now in
// the target group with their keys and expects their original seqs.
func checkDedupeAfterMove(t *testing.T, c *testcluster.Cluster, m *shard.Map, dst shard.GroupID, w *workload) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	retried := 0
	for key, a := range w.acks {
		if m.GroupFor(a.timeline) != dst || retried == 50 {
			continue
		}
		resp, err := c.Client().Append(ctx, a.timeline, []byte(a.payload), client.AppendOptions{IdempotencyKey: key})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetSeq() != a.seq || !resp.GetDeduplicated() {
			t.Fatalf("retry of %s on %s after the move: seq %d deduplicated %v, want seq %d", key, a.timeline, resp.GetSeq(), resp.GetDeduplicated(), a.seq)
		}
		retried++
	}
	if retried == 0 {
		t.Fatal("no acknowledged append in the moved range to retry")
	}
}

// fixture is what the source group held besides timelines: collections
// and device sessions, with their versions and epochs.
type fixture struct {
	collections map[string]uint64 // collection -> version
	users       map[string]uint64 // user -> epoch
}

func moveFixture(t *testing.T, c *testcluster.Cluster, m *shard.Map, src shard.GroupID) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client()
	f := &fixture{collections: map[string]uint64{}, users: map[string]uint64{}}
	for i := range 10 {
		coll := timelineIn(m, src, fmt.Sprintf("friends%d", i))
		for j := range 5 {
			resp, err := cl.Write(ctx, coll, []*syncv1.RecordOp{{Key: proto.String(fmt.Sprintf("k%d", j)), Value: []byte("v")}}, client.WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			f.collections[coll] = resp.GetVersion()
		}
		user := timelineIn(m, src, fmt.Sprintf("user%d", i))
		for j := range 3 {
			resp, err := cl.Login(ctx, user, fmt.Sprintf("dev%d", j), "phone", fmt.Sprintf("s%d", j), nil)
			if err != nil {
				t.Fatal(err)
			}
			f.users[user] = resp.GetSession().GetEpoch()
		}
	}
	return f
}

// check reads the collections and sessions back after the move, then
// writes once more: versions and epochs go on from where they stood.
func (f *fixture) check(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client()
	for coll, v := range f.collections {
		got, err := cl.SyncRecords(ctx, coll, 0, 100, client.Linearizable)
		if err != nil {
			t.Fatal(err)
		}
		if got.GetVersion() != v || len(got.GetChanges()) != 5 {
			t.Fatalf("%s after the move: version %d with %d records, want %d with 5", coll, got.GetVersion(), len(got.GetChanges()), v)
		}
		resp, err := cl.Write(ctx, coll, []*syncv1.RecordOp{{Key: proto.String("after"), Value: []byte("v")}}, client.WriteOptions{})
		if err != nil || resp.GetVersion() != v+1 {
			t.Fatalf("%s: write after the move: version %d (%v), want %d", coll, resp.GetVersion(), err, v+1)
		}
	}
	for user, epoch := range f.users {
		got, err := cl.ListDevices(ctx, user, client.Linearizable)
		if err != nil {
			t.Fatal(err)
		}
		if got.GetEpoch() != epoch || len(got.GetActive()) == 0 {
			t.Fatalf("%s after the move: epoch %d with %d devices, want %d", user, got.GetEpoch(), len(got.GetActive()), epoch)
		}
		resp, err := cl.Login(ctx, user, "dev-after", "desktop", "s-after", nil)
		if err != nil || resp.GetSession().GetEpoch() != epoch+1 {
			t.Fatalf("%s: login after the move: epoch %d (%v), want %d", user, resp.GetSession().GetEpoch(), err, epoch+1)
		}
	}
}

// checkSourceEmpty: every replica of the source group holds no key of
// the moved ranges.
func checkSourceEmpty(t *testing.T, c *testcluster.Cluster, src shard.GroupID, ranges []shard.Range) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, m := range c.Members {
			g := m.Node.Group(src)
			if g == nil {
				continue
			}
			_, keys, err := g.RangeDigest(ranges)
			if err != nil {
				return err
			}
			if keys != 0 {
				return fmt.Errorf("%s: group %d still holds %d keys of the moved slots", m.ID, src, keys)
			}
		}
		return nil
	})

}

// TestSplitUnderLoad: a group is split while writers append. Afterwards
// both groups serve their halves, nothing is lost and seqs go on at
// head+1 (every timeline is 1..head).
func TestSplitUnderLoad(t *testing.T) {
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) { cfg.Shards = 2 })
	names := numbered("sp-%d", 300)
	w := startWorkload(t, c.Client(), "split", 8, names, 5*time.Second)
	w.progress(t, 1000)
	var created shard.GroupID
	var moves []uint64
	testutil.Eventually(t, 30*time.Second, func() error {
		l := c.WaitLeader(30 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		created, moves, err = c.Members[l].Node.SplitGroup(ctx, 1)
		return err
	})
	for _, id := range moves {
		waitPhase(t, c, id, fsmpb.MovePhase_CLEANED, 120*time.Second)
	}
	w.progress(t, 1000)
	w.finish()
	c.WaitConverged(60 * time.Second)
	m := c.Members[0].Node.ShardMap()
	g1, _ := m.Group(1)
	gn, _ := m.Group(created)
	if shard.Slots(g1.Ranges) != 1024 || shard.Slots(gn.Ranges) != 1024 {
		t.Fatalf("after the split group 1 owns %v and group %d owns %v", g1.Ranges, created, gn.Ranges)
	}
	served := map[shard.GroupID]int{}
	for _, a := range w.acks {
		served[m.GroupFor(a.timeline)]++
	}
	if served[1] == 0 || served[created] == 0 {
		t.Fatalf("acknowledged appends per group: %v", served)
	}
	t.Logf("split into group %d by moves %v; acknowledged %d appends (per group now: %v)", created, moves, w.acked.Load(), served)
	checkHistory(t, c, names, w.acks, w.attempted)
}

// TestMoveResumesAfterMetaLeaderKillAndAborts: a move whose meta leader
// is killed mid-copy is taken over by the next one and completes; a move
// aborted mid-copy leaves the target without the range and the source
// taking writes. Every acknowledged append is there once.
func TestMoveResumesAfterMetaLeaderKillAndAborts(t *testing.T) {
	reached := make(chan uint64, 64)
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) {
		cfg.Shards = moveGroups
		cfg.MoveChunkBytes = 4 << 10
		cfg.OnMoveChunk = func(id uint64, fenced bool, st *fsmpb.MoveImportState) {
			if !fenced && st.GetRecords() > 500 {
				select {
				case reached <- id:
				default:
				}
			}
		}
	})
	names := numbered("rs-%d", 200)
	w := startWorkload(t, c.Client(), "resume", 8, names, 5*time.Second)
	w.progress(t, 2500)
	smap := c.Members[0].Node.ShardMap()
	waitReached := func(id uint64) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case got := <-reached:
				if got == id {
					return
				}
			case <-deadline:
				t.Fatalf("move %d never passed 500 records: %v", id, moveRecord(t, c, id))
			}
		}
	}

	g3, _ := smap.Group(3)
	resumed := planMove(t, c, g3.Ranges, 4)
	waitReached(resumed)
	victim := c.WaitLeader(30 * time.Second)
	t.Logf("killing the meta leader %s during move %d", c.Members[victim].ID, resumed)
	c.Kill(victim)
	rec := waitPhase(t, c, resumed, fsmpb.MovePhase_CLEANED, 120*time.Second)
	if rec.GetResumes() == 0 {
		t.Fatalf("move %d completed without a takeover: %v", resumed, rec)
	}
	c.Restart(victim)

	g1, _ := smap.Group(1)
	aborted := planMove(t, c, g1.Ranges, 2)
	waitReached(aborted)
	testutil.Eventually(t, 30*time.Second, func() error {
		l := c.WaitLeader(30 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return c.Members[l].Node.AbortMove(ctx, aborted)
	})
	waitPhase(t, c, aborted, fsmpb.MovePhase_ABORTED, 60*time.Second)
	w.progress(t, 1000)
	w.finish()
	c.WaitConverged(60 * time.Second)
	m := c.Members[0].Node.ShardMap()
	if g, _ := m.Group(1); !slices.Equal(g.Ranges, g1.Ranges) {
		t.Fatalf("after the abort group 1 owns %v, want %v", g.Ranges, g1.Ranges)
	}
	checkSourceEmpty(t, c, 2, g1.Ranges) // the target kept nothing of the aborted range
	checkHistory(t, c, names, w.acks, w.attempted)
}

// TestGrowThreeToFiveAndBack is the oxia#845 scenario: three nodes grow to
// five (two join, two groups are added and slots move to them), then
// shrink back to three (the two newest are removed), with writers running
// throughout. Every acknowledged write is on every replica at the end.
func TestGrowThreeToFiveAndBack(t *testing.T) {
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) { cfg.Shards = moveGroups })
	names := numbered("grow-%d", 300)
	w := startWorkload(t, c.Client(), "grow", 8, names, 5*time.Second)
	w.progress(t, 1000)

	n4, n5 := c.AddMember(), c.AddMember()
	c.WaitPlaced(90 * time.Second)
	var moves []uint64
	testutil.Eventually(t, 30*time.Second, func() error {
		l := c.WaitLeader(30 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Members[l].Node.AddGroups(ctx, 2); err != nil {
			return err
		}
		var err error
		moves, err = c.Members[l].Node.RebalanceSlots(ctx, "grow")
		return err
	})
	for _, id := range moves {
		waitPhase(t, c, id, fsmpb.MovePhase_CLEANED, 120*time.Second)
	}
	m := c.Members[0].Node.ShardMap()
	for _, g := range m.Groups {
		if n := shard.Slots(g.Ranges); n < shard.SlotCount/6 || n > shard.SlotCount/6+1 {
			t.Fatalf("after growing, group %d owns %d slots: %v", g.ID, n, m.Groups)
		}
	}
	if len(m.GroupsOn(n4.ID)) == 0 || len(m.GroupsOn(n5.ID)) == 0 {
		t.Fatalf("the new nodes hold no replica: %v", m.Groups)
	}
	w.progress(t, 1000)
	t.Logf("grown to 5 nodes and %d groups by moves %v; %d appends acknowledged", len(m.Groups), moves, w.acked.Load())

	for _, i := range []int{4, 3} {
		id := c.Members[i].ID
		if _, err := removeNode(t, c, id, false); err != nil {
			t.Fatal(err)
		}
		waitStoppedItself(t, c.Members[i], removeTimeout)
		waitRemovedEverywhere(t, c, id, removeTimeout)
		c.Stop(i)
		w.progress(t, 500)
	}
	w.finish()
	c.WaitConverged(60 * time.Second)
	checkGroupsOnLive(t, c, 60*time.Second)
	t.Logf("shrunk back to 3 nodes; acknowledged %d appends; writers saw %d errors", w.acked.Load(), w.errors.Load())
	checkHistory(t, c, names, w.acks, w.attempted)
}

// TestRebalanceEvensSlotsAndUnpins: after an operator pinned a group and
// moved slots unevenly, rebalance gives every group an even share again
// and unpins the group, so placement evens leaders out again.
func TestRebalanceEvensSlotsAndUnpins(t *testing.T) {
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) { cfg.Shards = 2 })
	l := c.WaitLeader(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := c.Members[l].Node.ShardMap()
	g1, _ := m.Group(1)
	if _, _, _, err := c.Members[l].Node.TransferLeader(ctx, 1, g1.Replicas[len(g1.Replicas)-1]); err != nil {
		t.Fatal(err)
	}
	id := planMove(t, c, []shard.Range{{Start: 0, End: 100}}, 2)
	waitPhase(t, c, id, fsmpb.MovePhase_CLEANED, 60*time.Second)
	var moves []uint64
	testutil.Eventually(t, 30*time.Second, func() error {
		var err error
		moves, err = c.Members[c.WaitLeader(30*time.Second)].Node.RebalanceSlots(ctx, "test")
		return err
	})
	if len(moves) != 1 {
		t.Fatalf("rebalance planned moves %v, want one", moves)
	}
	waitPhase(t, c, moves[0], fsmpb.MovePhase_CLEANED, 60*time.Second)
	testutil.Eventually(t, 30*time.Second, func() error {
		m := c.Members[c.WaitLeader(30*time.Second)].Node.ShardMap()
		for _, g := range m.Groups {
			if g.Pinned || shard.Slots(g.Ranges) != shard.SlotCount/2 {
				return fmt.Errorf("group %d: pinned %v, %d slots", g.ID, g.Pinned, shard.Slots(g.Ranges))
			}
		}
		return nil
	})
}
