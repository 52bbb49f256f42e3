package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// consumer is one Subscribe through the Go client, following some
// timelines from their start for the whole run and recording what it got.
type consumer struct {
	id  int
	sub *client.Subscription
	tls []string

	mu       sync.Mutex
	received map[string][]history.Entry
	done     chan struct{}
}

// consumerTimelines: every consumer follows the hot timelines, a few
// conversations and the members' timelines they deliver to.
func consumerTimelines(id int) []string {
	var out []string
	for i := range hotTimelines {
		out = append(out, fmt.Sprintf("hot-%d", i))
	}
	for c := id; c < conversations; c += 2 {
		out = append(out, conversationName(c))
		out = append(out, members(c)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func startConsumers(ctx context.Context, cl *client.Client, n int) ([]*consumer, error) {
	var out []*consumer
	for id := range n {
		sub, err := cl.Subscribe(ctx, client.SubscribeOptions{})
		if err != nil {
			return nil, fmt.Errorf("consumer %d: %w", id, err)
		}
		c := &consumer{id: id, sub: sub, tls: consumerTimelines(id), received: map[string][]history.Entry{}, done: make(chan struct{})}
		for _, tl := range c.tls {
			c.received[tl] = nil
			if err := sub.Add(tl, 0); err != nil {
				return nil, fmt.Errorf("consumer %d: add %s: %w", id, tl, err)
			}
		}
		go c.run()
		out = append(out, c)
	}
	return out, nil
}

// run records every entry in arrival order, as the consumer got it: the
// subscriptions checker judges the order.
func (c *consumer) run() {
	defer close(c.done)
	for ev := range c.sub.Events() {
		if ev.Entry == nil {
			continue
		}
		c.mu.Lock()
		c.received[ev.Timeline] = append(c.received[ev.Timeline], entryOf(ev.Entry))
		c.mu.Unlock()
	}
}

// caughtUp reports whether the consumer has every timeline up to its
// final head.
func (c *consumer) caughtUp(final history.Final) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tl := range c.tls {
		head := finalHead(final, tl)
		if n := len(c.received[tl]); n == 0 && head > 0 || n > 0 && c.received[tl][n-1].Seq < head {
			return false
		}
	}
	return true
}

// stopConsumers waits (up to wait) for every consumer to catch up with the
// final state, closes them and returns what they received.
func stopConsumers(cs []*consumer, final history.Final, wait time.Duration) []history.Subscription {
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	lagging := func(c *consumer) bool { return !c.caughtUp(final) }
	for slices.ContainsFunc(cs, lagging) && time.Now().Before(deadline) {
		<-tick.C
	}
	var out []history.Subscription
	for _, c := range cs {
		c.sub.Close()
		<-c.done
		c.mu.Lock()
		out = append(out, history.Subscription{Consumer: c.id, Received: maps.Clone(c.received)})
		c.mu.Unlock()
	}
	return out
}

// finalHead is a timeline's length in the first replica's copy.
func finalHead(f history.Final, tl string) uint64 {
	for _, n := range slices.Sorted(maps.Keys(f.Timelines)) {
		if es, ok := f.Timelines[n][tl]; ok {
			return uint64(len(es))
		}
	}
	return 0
}
