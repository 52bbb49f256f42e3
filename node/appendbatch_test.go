package node

import (
	"context"
	"fmt"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// Appends that arrive together share log entries, and each still gets a
// seq of its own: every seq from 1 to N once, a retried key its first seq.
func TestConcurrentAppendsShareEntriesAndKeepSeqsGapFree(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	defer n.Close()
	const appends, keys = 400, 50
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		seqs  = map[uint64]int{}
		byKey = map[string][]uint64{}
	)
	errs := make(chan error, appends)
	for i := range appends {
		wg.Go(func() {
			key := ""
			if i < 2*keys { // each of these keys is sent twice
				key = fmt.Sprint("k", i%keys)
			}
			res, err := n.Append(context.Background(), AppendRequest{Timeline: "busy", Payload: []byte(fmt.Sprint(i)), IdempotencyKey: key})
			if err != nil {
				errs <- fmt.Errorf("append %d: %w", i, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if key != "" {
				byKey[key] = append(byKey[key], res.Seq)
			}
			if !res.Deduplicated {
				seqs[res.Seq]++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const stored = appends - keys
	for s := uint64(1); s <= stored; s++ {
		if seqs[s] != 1 {
			t.Fatalf("seq %d given %d times (of %d stored appends)", s, seqs[s], stored)
		}
	}
	if len(seqs) != stored {
		t.Fatalf("%d distinct seqs, want %d", len(seqs), stored)
	}
	for k, s := range byKey {
		if len(s) != 2 || s[0] != s[1] {
			t.Fatalf("key %s answered seqs %v, want one seq twice", k, s)
		}
	}
	var m dto.Metric
	if err := n.metrics.appendBatch.Write(&m); err != nil {
		t.Fatal(err)
	}
	if entries, sum := m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum(); sum != appends || entries >= appends {
		t.Fatalf("%v appends went into %d log entries: none shared one", sum, entries)
	}
	got, err := n.Pull(context.Background(), "busy", 0, stored+1, Linearizable)
	if err != nil || len(got.Entries) != stored {
		t.Fatalf("pull: %d entries, %v; want %d", len(got.Entries), err, stored)
	}
}
