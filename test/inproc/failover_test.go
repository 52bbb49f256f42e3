package inproc

import (
	"context"
	"fmt"
	"slices"
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

	names := numbered("tl-%02d", timelines)
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

// checkHistory reads every timeline on every replica that hosts it and checks
// the invariants over the whole history: each timeline exactly 1..head, no
// idempotency key applied twice, every acknowledged append present at its
// seq with its payload, nothing no writer sent, and replicas identical.
func checkHistory(t *testing.T, c *testcluster.Cluster, timelines []string, acks map[string]ack, attempted map[string]string) {
	t.Helper()
	ctx := context.Background()
	reference := map[string][]string{} // timeline -> idempotency key per seq, from the first replica read
	referenceBy := map[string]string{}
	replicas := map[string]int{}
	for _, m := range c.Members {
		if m.Node == nil {
			continue
		}
		smap := m.Node.ShardMap()
		got := map[string][]string{}
		for _, tl := range timelines {
			if m.Node.Group(smap.GroupFor(tl)) == nil {
				continue // no replica of this timeline's group here
			}
			replicas[tl]++
			keys, err := readTimeline(ctx, m.Node, tl)
			if err != nil {
				t.Fatalf("%s: %v", m.ID, err)
			}
			for i, k := range keys {
				if attempted[k] != tl {
					t.Fatalf("%s: %s seq %d holds key %q that no writer sent there", m.ID, tl, i+1, k)
				}
			}
			got[tl] = keys
			if ref, ok := reference[tl]; !ok {
				reference[tl], referenceBy[tl] = keys, m.ID
			} else if !slices.Equal(ref, keys) {
				t.Fatalf("%s: timeline %s differs from %s's (%d entries, %d there; first difference at seq %d)", m.ID, tl, referenceBy[tl], len(keys), len(ref), firstDifference(ref, keys)+1)
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
			keys, ok := got[a.timeline]
			if !ok {
				continue
			}
			if a.seq == 0 || a.seq > uint64(len(keys)) || keys[a.seq-1] != k {
				t.Fatalf("%s: acknowledged append %s (%s seq %d) is missing or moved", m.ID, k, a.timeline, a.seq)
			}
		}
	}
	for _, tl := range timelines {
		if replicas[tl] == 0 {
			t.Fatalf("no running member hosts %s", tl)
		}
	}
}

// readTimeline pages through a timeline on one replica and checks that its
// seqs are exactly 1..head and every payload matches its key.
func readTimeline(ctx context.Context, n *node.Node, tl string) ([]string, error) {
	var keys []string
	var after uint64
	for {
		page, err := n.Pull(ctx, tl, after, 1000, node.Stale)
		if err != nil {
			return nil, fmt.Errorf("pull %s: %w", tl, err)
		}
		for _, e := range page.Entries {
			if e.Seq != after+1 {
				return nil, fmt.Errorf("%s has seq %d after %d: a gap or a duplicate", tl, e.Seq, after)
			}
			if string(e.Payload) != "payload-"+e.IdempotencyKey {
				return nil, fmt.Errorf("%s seq %d holds payload %q for key %q", tl, e.Seq, e.Payload, e.IdempotencyKey)
			}
			keys = append(keys, e.IdempotencyKey)
			after = e.Seq
		}
		if after == page.Head {
			return keys, nil
		}
		if len(page.Entries) == 0 {
			return nil, fmt.Errorf("%s head %d but entries stop at %d", tl, page.Head, after)
		}
	}
}

// firstDifference is the first index where a and b differ.
func firstDifference(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
