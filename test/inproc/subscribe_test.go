package inproc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/shard"
)

// TestSubscribeSeesEverySeqOnceAcrossANodeRestart: one Subscribe through
// the Go client follows 500 timelines spread over all eight groups while
// writers append to them; the node that leads the most groups is stopped
// and later restarted. For every timeline the subscriber received exactly
// 1..head: in order, nothing twice, nothing missing.
func TestSubscribeSeesEverySeqOnceAcrossANodeRestart(t *testing.T) {
	const (
		timelines = 500
		writers   = 8
	)
	c := testcluster.New(t, shardedNodes, func(cfg *node.Config) { cfg.Shards = shardedGroups })
	smap := c.Members[0].Node.ShardMap()
	var names []string
	groups := map[shard.GroupID]bool{}
	for i := range timelines {
		tl := fmt.Sprintf("sub:%d", i)
		names = append(names, tl)
		groups[smap.GroupFor(tl)] = true
	}
	if len(groups) != shardedGroups {
		t.Fatalf("timelines cover %d groups, want %d", len(groups), shardedGroups)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sub, err := c.Client().Subscribe(ctx, client.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for _, tl := range names {
		if err := sub.Add(tl, 0); err != nil {
			t.Fatal(err)
		}
	}

	// The consumer checks order as it goes and keeps the last seq per timeline.
	var mu sync.Mutex
	last := map[string]uint64{}
	var received atomic.Int64
	consumed := make(chan error, 1)
	go func() {
		for ev := range sub.Events() {
			if ev.Entry == nil {
				consumed <- fmt.Errorf("unexpected event %+v", ev)
				return
			}
			mu.Lock()
			want := last[ev.Timeline] + 1
			if ev.Entry.GetSeq() != want {
				mu.Unlock()
				consumed <- fmt.Errorf("%s: received seq %d, want %d", ev.Timeline, ev.Entry.GetSeq(), want)
				return
			}
			last[ev.Timeline] = want
			mu.Unlock()
			received.Add(1)
		}
		consumed <- nil
	}()

	writeCl := c.Client()
	wctx, stopWriters := context.WithCancel(ctx)
	var appended atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; wctx.Err() == nil; i += writers {
				actx, acancel := context.WithTimeout(wctx, 10*time.Second)
				_, err := writeCl.Append(actx, names[i%timelines], fmt.Appendf(nil, "w%d-%d", w, i), client.AppendOptions{IdempotencyKey: fmt.Sprintf("w%d-%d", w, i)})
				acancel()
				if err == nil {
					appended.Add(1)
				}
			}
		})
	}
	progress := func(n int64) {
		t.Helper()
		target := received.Load() + n
		testutil.Eventually(t, 60*time.Second, func() error {
			if got := received.Load(); got < target {
				return fmt.Errorf("received %d of %d entries", got, target)
			}
			return nil
		})
	}
	progress(500)
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
	t.Logf("stopping %s, leader of %d groups", c.Members[busiest].ID, most)
	c.Stop(busiest)
	progress(1000)
	c.Restart(busiest)
	progress(1000)
	stopWriters()
	wg.Wait()

	// After the writers stop, every timeline's subscriber reaches its head.
	// Heads are read again each time: an append a writer gave up on when
	// it stopped may still commit after a first read.
	testutil.Eventually(t, 60*time.Second, func() error {
		select {
		case err := <-consumed:
			t.Fatalf("consumer stopped: %v", err)
		default:
		}
		for _, tl := range names {
			h, err := writeCl.Head(ctx, tl, client.Linearizable)
			if err != nil {
				return err
			}
			mu.Lock()
			got := last[tl]
			mu.Unlock()
			if got != h {
				return fmt.Errorf("%s: received up to %d of %d", tl, got, h)
			}
		}
		return nil
	})
	t.Logf("%d appends acknowledged, %d entries received in order over %d timelines", appended.Load(), received.Load(), timelines)
	sub.Close()
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}
}
