package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/syncstore/syncstore/rpc/client"
)

// PushConfig is a push-latency run: Appenders append to Timelines while
// one Subscribe follows all of them.
type PushConfig struct {
	Timelines    int
	Appenders    int
	PayloadBytes int
	Duration     time.Duration
	OpTimeout    time.Duration
}

// PushResult: latency from each Append's acknowledgement to the
// subscriber's receipt of that entry (0 when the entry arrived first).
type PushResult struct {
	Config   PushConfig `json:"config"`
	Appended int        `json:"appended"`
	Received int        `json:"received"`
	// Missing appends were acknowledged but not received within the wait.
	Missing int           `json:"missing"`
	P50     time.Duration `json:"p50_ns"`
	P90     time.Duration `json:"p90_ns"`
	P99     time.Duration `json:"p99_ns"`
	Max     time.Duration `json:"max_ns"`
}

type entryID struct {
	timeline string
	seq      uint64
}

// Push runs a push-latency measurement through cl (appends and the
// subscription use the same client).
func Push(ctx context.Context, cl *client.Client, cfg PushConfig) (PushResult, error) {
	if cfg.Timelines < 1 || cfg.Appenders < 1 || cfg.Duration <= 0 || cfg.OpTimeout <= 0 {
		return PushResult{}, fmt.Errorf("bench: push needs timelines, appenders, a duration and a timeout; got %+v", cfg)
	}
	runID := rand.Uint64()
	names := make([]string, cfg.Timelines)
	for i := range names {
		names[i] = fmt.Sprintf("push-%x-%d", runID, i)
	}
	sub, err := cl.Subscribe(ctx, client.SubscribeOptions{Buffer: 4096})
	if err != nil {
		return PushResult{}, err
	}
	defer sub.Close()
	for _, tl := range names {
		if err := sub.Add(tl, 0); err != nil {
			return PushResult{}, err
		}
	}

	var mu sync.Mutex
	acked := map[entryID]time.Time{}
	got := map[entryID]time.Time{}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for ev := range sub.Events() {
			if ev.Entry != nil {
				now := time.Now()
				mu.Lock()
				got[entryID{ev.Timeline, ev.Entry.GetSeq()}] = now
				mu.Unlock()
			}
		}
	}()

	payload := make([]byte, cfg.PayloadBytes)
	deadline := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	for w := range cfg.Appenders {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(runID, uint64(w)))
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				tl := names[rng.IntN(len(names))]
				actx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
				resp, err := cl.Append(actx, tl, payload, client.AppendOptions{IdempotencyKey: fmt.Sprintf("push-%x-%d-%d", runID, w, i)})
				cancel()
				if err != nil {
					continue
				}
				now := time.Now()
				mu.Lock()
				acked[entryID{tl, resp.GetSeq()}] = now
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	// Give the last entries time to arrive.
	missing := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for id := range acked {
			if _, ok := got[id]; !ok {
				n++
			}
		}
		return n
	}
	waitUntil := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for missing() > 0 && time.Now().Before(waitUntil) && ctx.Err() == nil {
		<-tick.C
	}
	sub.Close()
	<-consumed

	res := PushResult{Config: cfg, Appended: len(acked), Received: len(got)}
	var lat []time.Duration
	for id, at := range acked {
		rx, ok := got[id]
		if !ok {
			res.Missing++
			continue
		}
		lat = append(lat, max(0, rx.Sub(at)))
	}
	s := Summarize(Config{}, time.Second, lat)
	res.P50, res.P90, res.P99, res.Max = s.P50, s.P90, s.P99, s.Max
	return res, nil
}
