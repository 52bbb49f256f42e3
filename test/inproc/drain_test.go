package inproc

import (
	"context"
	"fmt"
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
