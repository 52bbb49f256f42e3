package inproc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/node"
)

// TestAppendsSurviveLeaderRestarts drives 16 writers over 50 timelines while
// the leader is shut down (once cleanly, once abruptly) and brought back
// twice, then checks the whole
// history: every acknowledged append present exactly once at its seq, every
// timeline exactly 1..head, no idempotency key applied twice, and all
// replicas identical. Tiny snapshot settings make the restarted leader catch
// up through snapshots as well as through the log.
func TestAppendsSurviveLeaderRestarts(t *testing.T) {
	const (
		writers   = 16
		timelines = 50
		restarts  = 2
	)
	c := testcluster.New(t, 3, func(cfg *node.Config) {
		cfg.Shards = 1 // one data group: its leader is the one to stop
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 32
		cfg.SnapshotInterval = 200 * time.Millisecond
	})
	cl := c.Client()

	var names []string
	for i := range timelines {
		names = append(names, fmt.Sprintf("tl-%02d", i))
	}
	w := startWorkload(t, cl, "main", writers, names, time.Second)
	w.progress(t, 200)
	for r := range restarts {
		leader := c.WaitGroupLeader(1, 10*time.Second)
		if r%2 == 0 {
			t.Logf("restart %d: stopping leader %s", r+1, c.Members[leader].ID)
			c.Stop(leader)
		} else {
			t.Logf("restart %d: killing leader %s", r+1, c.Members[leader].ID)
			c.Kill(leader)
		}
		w.progress(t, 300) // the survivors elect a leader and go on
		c.Restart(leader)
		w.progress(t, 300)
	}
	w.finish()
	c.WaitConverged(30 * time.Second)

	t.Logf("acknowledged %d appends; writers saw %d errors and retried; %d retries were deduplicated",
		w.acked.Load(), w.errors.Load(), w.deduped.Load())
	if w.errors.Load() == 0 {
		t.Error("writers saw no error: the failovers were not exercised")
	}
	checkHistory(t, c, names, w.acks, w.attempted)
}

// checkHistory reads every timeline on every replica and checks the
// invariants over the whole history.
func checkHistory(t *testing.T, c *testcluster.Cluster, timelines []string, acks map[string]ack, attempted map[string]string) {
	t.Helper()
	ctx := context.Background()
	var reference map[string][]string // timeline -> idempotency key per seq, from the first replica
	for _, m := range c.Members {
		if m.Node == nil {
			continue
		}
		got := map[string][]string{}
		for _, tl := range timelines {
			var after uint64
			for {
				page, err := m.Node.Pull(ctx, tl, after, 1000, node.Stale)
				if err != nil {
					t.Fatalf("%s: pull %s: %v", m.ID, tl, err)
				}
				for _, e := range page.Entries {
					if e.Seq != after+1 {
						t.Fatalf("%s: %s has seq %d after %d: a gap or a duplicate", m.ID, tl, e.Seq, after)
					}
					if attempted[e.IdempotencyKey] != tl || string(e.Payload) != "payload-"+e.IdempotencyKey {
						t.Fatalf("%s: %s seq %d holds %q (key %q) that no writer sent there", m.ID, tl, e.Seq, e.Payload, e.IdempotencyKey)
					}
					got[tl] = append(got[tl], e.IdempotencyKey)
					after = e.Seq
				}
				if page.Head != after && len(page.Entries) == 0 {
					t.Fatalf("%s: %s head %d but entries stop at %d", m.ID, tl, page.Head, after)
				}
				if after == page.Head {
					break
				}
			}
		}
		seen := map[string]bool{}
		for tl, keys := range got {
			for i, k := range keys {
				if seen[k] {
					t.Fatalf("%s: idempotency key %s applied twice (again in %s at seq %d)", m.ID, k, tl, i+1)
				}
				seen[k] = true
			}
		}
		for k, a := range acks {
			keys := got[a.timeline]
			if a.seq == 0 || a.seq > uint64(len(keys)) || keys[a.seq-1] != k {
				t.Fatalf("%s: acknowledged append %s (%s seq %d) is missing or moved", m.ID, k, a.timeline, a.seq)
			}
		}
		if reference == nil {
			reference = got
			continue
		}
		for tl, keys := range reference {
			if fmt.Sprint(keys) != fmt.Sprint(got[tl]) {
				t.Fatalf("%s: timeline %s differs from %s's", m.ID, tl, c.Members[0].ID)
			}
		}
	}
}
