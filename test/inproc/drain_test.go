package inproc

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
)

// TestDrainHandsLeadershipOver: the node leading the most groups drains
// before a stop. Afterwards it leads nothing, every group has a leader
// elsewhere and takes appends, and no leadership comes back to it while it
// drains, however many reconcile rounds the others run.
func TestDrainHandsLeadershipOver(t *testing.T) {
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	busiest, most := 0, -1
	per := map[int]int{}
	for _, m := range c.GroupLeaders() {
		per[m]++
	}
	for m, n := range per {
		if n > most {
			busiest, most = m, n
		}
	}
	d := c.Members[busiest].Node
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s handed over %d groups in %s", c.Members[busiest].ID, most, time.Since(start).Round(time.Millisecond))

	leadsNothing := func() error {
		if d.IsLeader() {
			return fmt.Errorf("the drained node leads the meta group")
		}
		for _, g := range d.Groups() {
			if g.IsLeader() {
				return fmt.Errorf("the drained node leads group %d", g.ID())
			}
		}
		return nil
	}
	if err := leadsNothing(); err != nil {
		t.Fatal(err)
	}
	cl := c.Client()
	for i := range 64 {
		if _, err := cl.Append(ctx, fmt.Sprintf("drain:%d", i), []byte("x"), client.AppendOptions{}); err != nil {
			t.Fatalf("append after the drain: %v", err)
		}
	}
	// The others' reconcilers would hand its preferred groups back to it if
	// its probes answered; they must not.
	var others []*node.Node
	for i, m := range c.Members {
		if i != busiest {
			others = append(others, m.Node)
		}
	}
	target := map[*node.Node]uint64{}
	for _, o := range others {
		target[o] = o.ReconcileRounds() + 20
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if err := leadsNothing(); err != nil {
			t.Fatal(err)
		}
		for _, o := range others {
			if o.ReconcileRounds() < target[o] {
				return fmt.Errorf("%s has done %d of %d reconcile rounds", o.ID(), o.ReconcileRounds(), target[o])
			}
		}
		return nil
	})
	c.Stop(busiest)
}

// TestDrainAfterAPeerStopped: a rolling stop. n1 stops, then n2 drains. n2
// hands every group it leads to n3, the one live voter, and finishes well
// within syncd's 10 s drain deadline. An untargeted transfer goes to the
// voter with the highest match index, the stopped n1, fails, and the drain
// waits out its deadline still leading them.
func TestDrainAfterAPeerStopped(t *testing.T) {
	c := testcluster.New(t, 3, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	c.Stop(0)
	n2, n3 := c.Members[1].Node, c.Members[2].Node
	// Wait until every group is led again (n1's groups elect n2 or n3) and
	// n2 leads some: a drain with nothing to hand over proves nothing.
	var led []*node.Group
	testutil.Eventually(t, 30*time.Second, func() error {
		if c.Leader() < 0 {
			return fmt.Errorf("the meta group has no leader")
		}
		if got := len(c.GroupLeaders()); got != shardedGroups {
			return fmt.Errorf("%d of %d groups have a leader", got, shardedGroups)
		}
		led = nil
		for _, g := range append([]*node.Group{n2.MetaGroup()}, n2.Groups()...) {
			if g.IsLeader() {
				led = append(led, g)
			}
		}
		if len(led) == 0 {
			return fmt.Errorf("n2 leads no group yet")
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // syncd's drain deadline
	defer cancel()
	start := time.Now()
	if err := n2.Drain(ctx); err != nil {
		t.Fatalf("drain after n1 stopped: %v", err)
	}
	took := time.Since(start)
	t.Logf("n2 handed over %d groups in %s", len(led), took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("the drain took %s: a hand-over waited for the stopped node", took)
	}
	// Every group n2 led has n3, a live voter: n2 leads none of them, and
	// n3 wins the election the hand-over started in each.
	for _, g := range append([]*node.Group{n2.MetaGroup()}, n2.Groups()...) {
		if g.IsLeader() {
			t.Errorf("n2 still leads group %d after its drain", g.ID())
		}
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		for _, g := range led {
			on := n3.Group(g.ID())
			if g == n2.MetaGroup() {
				on = n3.MetaGroup()
			}
			if on == nil || !on.IsLeader() {
				lid, _ := g.Leader()
				return fmt.Errorf("group %d: n3 does not lead it after n2's drain (n2 sees leader %q)", g.ID(), lid)
			}
			if g.IsLeader() {
				return fmt.Errorf("group %d: n2 leads it again", g.ID())
			}
		}
		return nil
	})
}

// TestDrainWithNoLiveVoter: the last node of a rolling stop. n3 is
// stopped and n1 has drained, handing everything to n2; n2's drain then
// has no live voter for any group (n1 refuses, draining; n3 is down). It
// does not wait out its deadline, and its log names each group it keeps
// and why.
func TestDrainWithNoLiveVoter(t *testing.T) {
	rec := &logRecorder{}
	c := testcluster.New(t, 3, func(cfg *node.Config) {
		cfg.Shards = shardedGroups
		if cfg.NodeID == "n2" {
			cfg.Logger = rec.logger()
		}
	})
	c.Stop(2)
	n1, n2 := c.Members[0].Node, c.Members[1].Node
	// n3's groups elect again first: a drained node still wins elections.
	testutil.Eventually(t, 30*time.Second, func() error {
		if c.Leader() < 0 {
			return fmt.Errorf("the meta group has no leader")
		}
		if got := len(c.GroupLeaders()); got != shardedGroups {
			return fmt.Errorf("%d of %d groups have a leader", got, shardedGroups)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n1.Drain(ctx); err != nil {
		t.Fatalf("n1's drain: %v", err)
	}
	var led []*node.Group
	testutil.Eventually(t, 10*time.Second, func() error {
		led = nil
		for _, g := range append([]*node.Group{n2.MetaGroup()}, n2.Groups()...) {
			if !g.IsLeader() {
				return fmt.Errorf("n2 does not lead group %d yet", g.ID())
			}
			led = append(led, g)
		}
		return nil
	})

	start := time.Now()
	if err := n2.Drain(ctx); err != nil {
		t.Fatalf("n2's drain with no live voter: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("n2's drain took %s, with no voter to wait for", took)
	}
	for _, g := range led {
		id := fmt.Sprint(uint64(g.ID()))
		said := rec.matching(start, func(l logLine) bool {
			return strings.HasPrefix(l.msg, "drain: no live voter") && l.attrs["group"] == id
		})
		if len(said) != 1 {
			t.Errorf("group %d: %d lines say no live voter can take it, want 1", g.ID(), len(said))
			continue
		}
		if v := said[0].attrs["voters"]; !strings.Contains(v, "n1: ") || !strings.Contains(v, "n3: ") {
			t.Errorf("group %d: the line does not say why n1 and n3 cannot take it: %v", g.ID(), said[0])
		}
	}
	t.Log(rec.matching(start, func(l logLine) bool { return strings.HasPrefix(l.msg, "drain") }))
}
