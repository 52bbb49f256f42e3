package inproc

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// TestRetentionTrimsByCountAndAge: user timelines keep their newest 10
// entries, conversations an hour of them (the clock is the test's). The
// leaders trim on their own; every replica ends identical; Pull below the
// oldest kept seq answers RESET with it; History pages back contiguously
// and ends cleanly at the oldest kept entry; seqs go on from the head.
func TestRetentionTrimsByCountAndAge(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	c := testcluster.New(t, 3, func(cfg *node.Config) {
		cfg.Shards = 2
		cfg.Clock = func() time.Time { return time.UnixMilli(now.Load()) }
		cfg.UserRetention = node.Retention{MaxEntries: 10}
		cfg.ConversationRetention = node.Retention{MaxAge: time.Hour}
		cfg.RetentionInterval = 50 * time.Millisecond
	})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for i := range 30 {
		if _, err := cl.Append(ctx, "user:ret", fmt.Appendf(nil, "u%d", i+1), client.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		if _, err := cl.Send(ctx, "conv:ret", "user:a", nil, fmt.Appendf(nil, "old %d", i+1), client.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	now.Add(2 * time.Hour.Milliseconds())
	for i := range 5 {
		if _, err := cl.Send(ctx, "conv:ret", "user:a", nil, fmt.Appendf(nil, "new %d", i+1), client.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	cases := []struct {
		timeline     string
		oldest, head uint64
	}{
		{"user:ret", 21, 30}, // by count
		{"conv:ret", 11, 15}, // by age
	}
	for _, tc := range cases {
		testutil.Eventually(t, 30*time.Second, func() error {
			page, err := cl.Pull(ctx, tc.timeline, 0, 100, client.Linearizable)
			if err != nil {
				return err
			}
			if page.GetStatus() != syncv1.PullStatus_PULL_STATUS_RESET || page.GetOldestSeq() != tc.oldest || page.GetHeadSeq() != tc.head {
				return fmt.Errorf("%s: pull from 0: %v oldest %d head %d, want RESET oldest %d head %d",
					tc.timeline, page.GetStatus(), page.GetOldestSeq(), page.GetHeadSeq(), tc.oldest, tc.head)
			}
			return nil
		})
		checkHistoryPages(t, cl, tc.timeline, tc.oldest, tc.head)
		// Pulling from the oldest kept seq works, and History before it resets.
		page, err := cl.Pull(ctx, tc.timeline, tc.oldest-1, 100, client.Linearizable)
		if err != nil || page.GetStatus() != syncv1.PullStatus_PULL_STATUS_OK || len(page.GetEntries()) != int(tc.head-tc.oldest+1) {
			t.Fatalf("%s: pull after %d: %v, %v", tc.timeline, tc.oldest-1, page, err)
		}
		if h, err := cl.History(ctx, tc.timeline, tc.oldest-1, 10, client.Linearizable); err != nil || h.GetStatus() != syncv1.HistoryStatus_HISTORY_STATUS_RESET || h.GetOldestSeq() != tc.oldest {
			t.Fatalf("%s: history below the oldest: %v, %v", tc.timeline, h, err)
		}
	}
	resp, err := cl.Append(ctx, "user:ret", []byte("after"), client.AppendOptions{})
	if err != nil || resp.GetSeq() != 31 {
		t.Fatalf("append after trimming: seq %d, %v", resp.GetSeq(), err)
	}
	c.WaitConverged(30 * time.Second)
}

// checkHistoryPages pages a timeline back from the newest in pages of 3 and
// checks the pages join up from head down to oldest and then end.
func checkHistoryPages(t *testing.T, cl *client.Client, tl string, oldest, head uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := head
	before := uint64(0)
	for {
		h, err := cl.History(ctx, tl, before, 3, client.Linearizable)
		if err != nil {
			t.Fatalf("%s: history before %d: %v", tl, before, err)
		}
		es := h.GetEntries()
		for i := len(es) - 1; i >= 0; i-- {
			if es[i].GetSeq() != want {
				t.Fatalf("%s: history before %d gave seq %d, want %d", tl, before, es[i].GetSeq(), want)
			}
			want--
		}
		if h.GetStatus() == syncv1.HistoryStatus_HISTORY_STATUS_END {
			break
		}
		if h.GetStatus() != syncv1.HistoryStatus_HISTORY_STATUS_MORE || len(es) == 0 {
			t.Fatalf("%s: history before %d: status %v with %d entries", tl, before, h.GetStatus(), len(es))
		}
		before = es[0].GetSeq()
	}
	if want != oldest-1 {
		t.Fatalf("%s: history ended at %d, want the oldest kept seq %d", tl, want+1, oldest)
	}
}
