package inproc

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/shard"
)

// deliveryGate holds the deliveries nodes send to other nodes while it is
// closed, so a test can kill a node while its fan-out is half done.
type deliveryGate struct {
	// only, if set before the cluster starts, holds only deliveries of
	// that conversation.
	only    string
	mu      sync.Mutex
	closed  bool
	release chan struct{}
	held    map[string]int // node -> deliveries it is holding
}

func (g *deliveryGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed, g.release, g.held = true, make(chan struct{}), map[string]int{}
}

func (g *deliveryGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		g.closed = false
		close(g.release)
	}
}

// holder is a node holding deliveries at the gate, or "".
func (g *deliveryGate) holder() (string, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, n := range g.held {
		return id, n
	}
	return "", 0
}

func (g *deliveryGate) wrap(cfg *node.Config) {
	inner, self := cfg.Deliverer, cfg.NodeID
	cfg.Deliverer = func(ctx context.Context, addr string, group shard.GroupID, items []node.Delivery) (fsm.DeliverResult, error) {
		g.mu.Lock()
		closed, release := g.closed, g.release
		if g.only != "" && !slices.ContainsFunc(items, func(d node.Delivery) bool { return d.Conversation == g.only }) {
			closed = false
		}
		if closed {
			g.held[self]++
		}
		g.mu.Unlock()
		if closed {
			select {
			case <-ctx.Done(): // the node shuts down
				return fsm.DeliverResult{}, ctx.Err()
			case <-release:
			}
		}
		return inner(ctx, addr, group, items)
	}
}

// TestFanOutSurvivesConversationLeaderKill: three nodes, eight groups, a
// conversation of 200 members spread over every group. Messages are sent
// before, during and after a fan-out that is cut short by killing the
// conversation group's leader (its deliveries to other nodes are held, so
// the kill lands mid fan-out). The new leader finishes the job: every
// member's timeline ends with exactly one entry per message, in
// conversation order, nothing duplicated, and the conversation keeps them
// all.
func TestFanOutSurvivesConversationLeaderKill(t *testing.T) {
	const (
		members = 200
		before  = 5
		after   = 5
		conv    = "conv:team"
	)
	var gate deliveryGate
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) {
		cfg.Shards = shardedGroups
		gate.wrap(cfg)
	})
	cl := c.Client()
	smap := c.Members[0].Node.ShardMap()
	var users []string
	groups := map[shard.GroupID]bool{}
	for i := range members {
		u := fmt.Sprintf("user:%d", i)
		users = append(users, u)
		groups[smap.GroupFor(u)] = true
	}
	if len(groups) != shardedGroups {
		t.Fatalf("members cover %d groups, want %d", len(groups), shardedGroups)
	}
	sender := users[0]
	send := func(i int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := cl.Send(ctx, conv, sender, users[1:], fmt.Appendf(nil, "message %d", i), client.AppendOptions{IdempotencyKey: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if resp.GetSeq() != uint64(i) || resp.GetRecipients() != members {
			t.Fatalf("send %d: seq %d for %d recipients", i, resp.GetSeq(), resp.GetRecipients())
		}
	}
	for i := 1; i <= before; i++ {
		send(i)
	}

	convGroup := smap.GroupFor(conv)
	gate.close()
	send(before + 1)
	var holder string
	testutil.Eventually(t, 10*time.Second, func() error {
		if holder, _ = gate.holder(); holder == "" {
			return fmt.Errorf("no delivery of message %d is held yet", before+1)
		}
		return nil
	})
	leader := slices.IndexFunc(c.Members, func(m *testcluster.Member) bool { return m.ID == holder })
	_, held := gate.holder()
	t.Logf("killing %s, the leader of group %d, with %d deliveries held", holder, convGroup, held)
	c.Kill(leader)
	gate.open()
	for i := before + 2; i <= before+1+after; i++ {
		send(i)
	}
	c.Restart(leader)

	total := uint64(before + 1 + after)
	waitMembersHave(t, cl, users, conv, total)
	// Once no replica holds an undelivered message, nothing more can arrive:
	// check again that nothing was duplicated.
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, m := range c.Members {
			if g := m.Node.Group(convGroup); g != nil {
				if pending, err := g.PendingDeliveries(); err != nil || pending {
					return fmt.Errorf("%s still has deliveries pending (%v)", m.ID, err)
				}
			}
		}
		return nil
	})
	waitMembersHave(t, cl, users, conv, total)
	c.WaitConverged(30 * time.Second)

	page, err := cl.Pull(context.Background(), conv, 0, 100, client.Linearizable)
	if err != nil || len(page.GetEntries()) != int(total) {
		t.Fatalf("the conversation holds %d entries (%v), want %d", len(page.GetEntries()), err, total)
	}
}

// waitMembersHave waits until every member's timeline holds exactly the
// conversation's messages 1..n, once each and in order, and fails on any
// duplicate or reordering seen on the way.
func waitMembersHave(t *testing.T, cl *client.Client, users []string, conv string, n uint64) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, u := range users {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			page, err := cl.Pull(ctx, u, 0, 1000, client.Linearizable)
			cancel()
			if err != nil {
				return fmt.Errorf("pull %s: %w", u, err)
			}
			entries := page.GetEntries()
			for i, e := range entries {
				if e.GetSeq() != uint64(i+1) || e.GetConversation() != conv || e.GetConversationSeq() != uint64(i+1) {
					t.Fatalf("%s entry %d: seq %d, conversation %q seq %d: want message %d once, in order", u, i, e.GetSeq(), e.GetConversation(), e.GetConversationSeq(), i+1)
				}
				if string(e.GetPayload()) != fmt.Sprintf("message %d", i+1) {
					t.Fatalf("%s entry %d has payload %q", u, i, e.GetPayload())
				}
			}
			if uint64(len(entries)) != n {
				return fmt.Errorf("%s has %d of %d messages", u, len(entries), n)
			}
		}
		return nil
	})
}
