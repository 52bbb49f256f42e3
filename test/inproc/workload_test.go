package inproc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/rpc/client"
)

// ack is an append the cluster acknowledged.
type ack struct {
	timeline string
	seq      uint64
	payload  string
	at       time.Time
}

// workload is a set of writers appending unique payloads with unique
// idempotency keys to random timelines, each retrying an append with the
// same key until it is acknowledged.
type workload struct {
	mu        sync.Mutex
	acks      map[string]ack    // by idempotency key
	attempted map[string]string // idempotency key -> timeline
	acked     atomic.Int64
	errors    atomic.Int64
	deduped   atomic.Int64
	stop      chan struct{}
	wg        sync.WaitGroup
}

// startWorkload starts writers; each call is bounded by callTimeout so the
// writers see failovers as errors and retry. Idempotency keys start with
// numbered is n timeline (or collection) ids: format applied to 0..n-1.
func numbered(format string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(format, i)
	}
	return out
}

// name, which must be unique among the workloads of a test.
func startWorkload(t *testing.T, cl *client.Client, name string, writers int, timelines []string, callTimeout time.Duration) *workload {
	w := &workload{acks: map[string]ack{}, attempted: map[string]string{}, stop: make(chan struct{})}
	for id := range writers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(id), 42))
			for i := 0; ; i++ {
				select {
				case <-w.stop:
					return
				default:
				}
				tl := timelines[rng.IntN(len(timelines))]
				key := fmt.Sprintf("%s-w%d-%d", name, id, i)
				payload := "payload-" + key
				w.mu.Lock()
				w.attempted[key] = tl
				w.mu.Unlock()
				for {
					ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
					resp, err := cl.Append(ctx, tl, []byte(payload), client.AppendOptions{IdempotencyKey: key})
					cancel()
					if err == nil {
						w.record(t, key, ack{timeline: tl, seq: resp.GetSeq(), payload: payload, at: time.Now()}, resp.GetDeduplicated())
						break
					}
					w.errors.Add(1)
					select {
					case <-w.stop:
						return // outcome unknown: the checker allows it at most once
					default:
					}
				}
			}
		}()
	}
	return w
}

func (w *workload) record(t *testing.T, key string, a ack, deduped bool) {
	if deduped {
		w.deduped.Add(1)
	}
	w.mu.Lock()
	if prev, ok := w.acks[key]; ok && prev.seq != a.seq {
		t.Errorf("key %s acknowledged at seq %d and at %d", key, prev.seq, a.seq)
	}
	w.acks[key] = a
	w.mu.Unlock()
	w.acked.Add(1)
}

// progress waits until more appends have been acknowledged.
func (w *workload) progress(t *testing.T, more int64) {
	t.Helper()
	target := w.acked.Load() + more
	testutil.Eventually(t, 60*time.Second, func() error {
		if got := w.acked.Load(); got < target {
			return fmt.Errorf("%d appends acknowledged, waiting for %d", got, target)
		}
		return nil
	})
}

// lastAck is when the newest acknowledgement came.
func (w *workload) lastAck() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last time.Time
	for _, a := range w.acks {
		if a.at.After(last) {
			last = a.at
		}
	}
	return last
}

// longestGap is the longest time without an acknowledgement that
// overlaps [from, to], counting the gaps that straddle its ends: around a
// fault at from, how long the workload's timelines were unavailable (a
// window with no acknowledgement at all is one gap, not none).
func (w *workload) longestGap(from, to time.Time) time.Duration {
	return w.gap(from, to, true)
}

// longestGapWithin is the longest gap between two acknowledgements that
// both came within [from, to]: the normal pace, for scale.
func (w *workload) longestGapWithin(from, to time.Time) time.Duration {
	return w.gap(from, to, false)
}

func (w *workload) gap(from, to time.Time, straddle bool) time.Duration {
	w.mu.Lock()
	var ts []time.Time
	for _, a := range w.acks {
		ts = append(ts, a.at)
	}
	w.mu.Unlock()
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	for i := 1; i < len(ts); i++ {
		var in bool
		if straddle { // the gap overlaps the window
			in = ts[i].After(from) && ts[i-1].Before(to)
		} else { // the gap lies inside it
			in = !ts[i-1].Before(from) && !ts[i].After(to)
		}
		if in {
			gap = max(gap, ts[i].Sub(ts[i-1]))
		}
	}
	return gap.Round(time.Millisecond)
}

// finish stops the writers and waits for them.
func (w *workload) finish() {
	close(w.stop)
	w.wg.Wait()
}
