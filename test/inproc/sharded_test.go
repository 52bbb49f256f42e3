package inproc

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/shard"
)

const (
	shardedNodes  = 3
	shardedGroups = 8
)

// TestBootstrapBalancesLeaders: three nodes, eight groups: no node leads
// more than four groups once the cluster has settled.
func TestBootstrapBalancesLeaders(t *testing.T) {
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	testutil.Eventually(t, 30*time.Second, func() error {
		leaders := c.GroupLeaders()
		if len(leaders) != shardedGroups {
			return fmt.Errorf("%d of %d groups have a leader", len(leaders), shardedGroups)
		}
		per := map[int]int{}
		for _, m := range leaders {
			per[m]++
		}
		for m, n := range per {
			if n > 4 {
				return fmt.Errorf("%s leads %d groups", c.Members[m].ID, n)
			}
		}
		return nil
	})
	// Every replica's state machine knows the slots its group owns.
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, m := range c.Members {
			smap := m.Node.ShardMap()
			for _, g := range m.Node.Groups() {
				want, _ := smap.Group(g.ID())
				got, _, ok, err := g.OwnedRanges()
				if err != nil || !ok || !slices.Equal(got, want.Ranges) {
					return fmt.Errorf("%s: group %d owns %v (told: %v, %v), map says %v", m.ID, g.ID(), got, ok, err, want.Ranges)
				}
			}
		}
		return nil
	})
}

// TestShardedClusterSurvivesLosingTheBusiestNode: three nodes, eight groups,
// appends to 1000 timelines spread over every group. The node that leads
// the most groups is killed: every group keeps accepting appends, and the
// test measures how long each was unavailable. The node comes back, catches
// up, and every replica of every group is identical; every timeline is
// exactly 1..head with nothing lost or duplicated.
func TestShardedClusterSurvivesLosingTheBusiestNode(t *testing.T) {
	const (
		writers   = 16
		timelines = 1000
	)
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	smap := c.Members[0].Node.ShardMap()
	var names []string
	perGroup := map[shard.GroupID]int{}
	for i := range timelines {
		tl := fmt.Sprintf("user:%d", i)
		names = append(names, tl)
		perGroup[smap.GroupFor(tl)]++
	}
	if len(perGroup) != shardedGroups {
		t.Fatalf("the timelines cover %d groups, want %d", len(perGroup), shardedGroups)
	}

	w := startWorkload(t, c.Client(), "main", writers, names, time.Second)
	// One probe writer per group, on a timeline of its own with a client that
	// retries fast, measures each group's availability without waiting on
	// the other groups (a writer stuck on a dead group writes nowhere else).
	probeClient := c.ClientWith(client.Options{AttemptTimeout: 200 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	probes := map[shard.GroupID]*workload{}
	for g := range perGroup {
		tl := timelineIn(smap, g, "probe")
		names = append(names, tl)
		probes[g] = startWorkload(t, probeClient, fmt.Sprint("probe", g), 1, []string{tl}, 10*time.Second)
	}
	w.progress(t, 1000)

	leaders := c.GroupLeaders()
	led := map[int][]shard.GroupID{}
	for g, m := range leaders {
		led[m] = append(led[m], g)
	}
	victim := -1
	for m, gs := range led {
		if victim < 0 || len(gs) > len(led[victim]) {
			victim = m
		}
	}
	t.Logf("killing %s, leader of groups %v", c.Members[victim].ID, led[victim])
	killedAt := time.Now()
	c.Kill(victim)

	// Every group accepts appends again.
	testutil.Eventually(t, 30*time.Second, func() error {
		for g, p := range probes {
			if !p.lastAck().After(killedAt) {
				return fmt.Errorf("group %d has no acknowledged append since the kill", g)
			}
		}
		return nil
	})
	w.progress(t, 1000)
	gaps := map[shard.GroupID]time.Duration{}
	var all []time.Duration
	for g, p := range probes {
		gaps[g] = p.longestGap(killedAt, time.Now())
		all = append(all, gaps[g])
	}
	slices.Sort(all)
	var normal time.Duration // the longest gap in the 5 s before the kill, for scale
	for _, p := range probes {
		normal = max(normal, p.longestGapWithin(killedAt.Add(-5*time.Second), killedAt))
	}
	t.Logf("unavailability per group after the kill: %v (median %v, max %v); groups the victim led: %v; longest gap before the kill: %v",
		gaps, all[len(all)/2], all[len(all)-1], led[victim], normal)

	// Gossip notices the dead node; Raft membership does not follow it.
	victimID := c.Members[victim].ID
	survivor := c.Members[(victim+1)%shardedNodes].Node
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, m := range survivor.Gossip() {
			if m.ID == victimID && m.Health != node.HealthAlive {
				return nil
			}
		}
		return fmt.Errorf("gossip still reports %s alive: %+v", victimID, survivor.Gossip())
	})
	for _, g := range survivor.Groups() {
		members, err := g.Members()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(members, func(m node.Member) bool { return m.ID == victimID && m.Voter }) {
			t.Fatalf("group %d dropped %s from its voters: %+v", g.ID(), victimID, members)
		}
	}

	c.Restart(victim)
	w.progress(t, 1000)
	w.finish()
	for _, p := range probes {
		p.finish()
		for k, a := range p.acks {
			w.acks[k] = a
		}
		for k, tl := range p.attempted {
			w.attempted[k] = tl
		}
	}
	c.WaitConverged(60 * time.Second)
	t.Logf("acknowledged %d appends; writers saw %d errors; %d retries were deduplicated",
		w.acked.Load(), w.errors.Load(), w.deduped.Load())
	checkHistory(t, c, names, w.acks, w.attempted)
}

// timelineIn finds a timeline id with the prefix that the map puts in group g.
func timelineIn(m *shard.Map, g shard.GroupID, prefix string) string {
	for i := 0; ; i++ {
		if tl := fmt.Sprintf("%s-%d-%d", prefix, g, i); m.GroupFor(tl) == g {
			return tl
		}
	}
}

// TestAFourthNodeTakesItsShareAndDataStays: data written on three nodes is
// all there, on every replica, after a fourth node joined and replicas moved
// to it (non-voter, catch-up, voter, then removal from the old node).
func TestAFourthNodeTakesItsShareAndDataStays(t *testing.T) {
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	names := numbered("t4-%d", 200)
	w := startWorkload(t, c.Client(), "before", 8, names, 5*time.Second)
	w.progress(t, 500)
	w.finish()

	n4 := c.AddMember()
	smap := n4.Node.ShardMap()
	hosted := smap.GroupsOn(n4.ID)
	// 8 groups x 3 replicas over 4 nodes: 6 each.
	if len(hosted) != 6 {
		t.Fatalf("%s hosts groups %v, want 6 of them (map v%d)", n4.ID, hosted, smap.Version)
	}
	for _, m := range c.Members {
		if n := len(smap.GroupsOn(m.ID)); n != 6 {
			t.Errorf("%s hosts %d groups, want 6", m.ID, n)
		}
	}
	c.WaitConverged(60 * time.Second)
	checkHistory(t, c, names, w.acks, w.attempted)
}

// TestGroupsMoveOffTheirOnlyReplica: one node creates eight groups, then
// four more join and the map moves groups entirely off the first node. Each
// group must stay led and keep its data: the first node's replica stays up
// until the group's new replicas have caught up and it has been removed.
func TestGroupsMoveOffTheirOnlyReplica(t *testing.T) {
	c := testcluster.New(t, 1, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	names := numbered("m-%d", 100)
	w := startWorkload(t, c.Client(), "before", 4, names, 5*time.Second)
	w.progress(t, 300)
	w.finish()
	for range 4 {
		c.AddMember()
	}
	smap := c.Members[0].Node.ShardMap()
	moved := 0
	for _, g := range smap.Groups {
		if !slices.Contains(g.Replicas, "n1") {
			moved++
		}
	}
	if moved == 0 {
		t.Fatalf("no group moved off n1 (map v%d): the test proves nothing", smap.Version)
	}
	after := startWorkload(t, c.Client(), "after", 4, names, 5*time.Second)
	after.progress(t, 300)
	after.finish()
	c.WaitConverged(60 * time.Second)
	for k, a := range after.acks {
		w.acks[k] = a
	}
	for k, tl := range after.attempted {
		w.attempted[k] = tl
	}
	checkHistory(t, c, names, w.acks, w.attempted)
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, g := range smap.Groups {
			if !slices.Contains(g.Replicas, "n1") && c.Members[0].Node.Group(g.ID) != nil {
				return fmt.Errorf("n1 still runs group %d that moved away", g.ID)
			}
		}
		return nil
	})
	t.Logf("%d of %d groups moved entirely off n1", moved, len(smap.Groups))
}
