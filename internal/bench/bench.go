// Package bench is the load generator behind `syncctl bench`: concurrent
// clients appending fixed-size payloads to a set of timelines for a fixed
// time (or count), with throughput and latency percentiles.
package bench

import (
	"context"
	"fmt"
	"github.com/syncstore/syncstore/shard"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config of one run.
type Config struct {
	Clients      int
	PayloadBytes int
	Timelines    int
	Duration     time.Duration
	// OpTimeout bounds each append.
	OpTimeout time.Duration
	// Rate, when positive, paces the clients to this many appends per
	// second in all (each client its share), so that systems or settings
	// are compared at the same load; 0 runs each client flat out.
	Rate float64 `json:",omitempty"`
	// Count, when positive, ends the run after this many appends in all
	// (successful or not), or at Duration if that comes first (0: no time
	// limit); 0 runs for Duration.
	Count int `json:",omitempty"`
	// Slots, when set, puts every timeline in these slot ranges (to load
	// or probe the slots a move takes, or only the others).
	Slots []shard.Range `json:",omitempty"`
}

// Validate reports a config that cannot run.
func (c Config) Validate() error {
	if c.Clients < 1 || c.PayloadBytes < 0 || c.Timelines < 1 || c.Duration < 0 || (c.Duration == 0 && c.Count <= 0) || c.Count < 0 || c.OpTimeout <= 0 || c.Rate < 0 {
		return fmt.Errorf("bench: need clients >= 1, size >= 0, timelines >= 1, a positive duration or count, and a positive timeout; got %+v", c)
	}
	for _, r := range c.Slots {
		if r.Start >= r.End || r.End > shard.SlotCount {
			return fmt.Errorf("bench: slot range [%d,%d) is empty or past %d", r.Start, r.End, shard.SlotCount)
		}
	}
	return nil
}

// AppendFunc performs one append; worker is the client's index.
type AppendFunc func(ctx context.Context, worker int, timeline string, key string, payload []byte) error

// Result of a run. Latencies are of successful appends.
type Result struct {
	Config    Config        `json:"config"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	OK        int           `json:"ok"`
	Errors    int           `json:"errors"`
	PerSecond float64       `json:"appends_per_second"`
	P50       time.Duration `json:"p50_ns"`
	P90       time.Duration `json:"p90_ns"`
	P99       time.Duration `json:"p99_ns"`
	Max       time.Duration `json:"max_ns"`
	// MaxGap is the longest time without a successful append (from the
	// start, between two, and to the end): what a probe of moved slots
	// reports as their unavailability.
	MaxGap time.Duration `json:"max_gap_ns"`
	// FirstError is kept to explain a run with errors.
	FirstError string `json:"first_error,omitempty"`
}

// Run drives the load until cfg.Duration has passed or ctx ends. Appends in
// flight at the end complete and count.
func Run(ctx context.Context, cfg Config, appendFn AppendFunc) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	runID := rand.Uint64()
	payload := make([]byte, cfg.PayloadBytes)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	deadline := time.Now().Add(cfg.Duration)
	// A zero Duration sets no time limit (a counted run).
	timeUp := func() bool { return cfg.Duration > 0 && !time.Now().Before(deadline) }
	var claimed atomic.Int64 // appends started, against cfg.Count
	names := timelineNames(cfg)
	latencies := make([][]time.Duration, cfg.Clients)
	acked := make([][]time.Time, cfg.Clients)
	errs := make([]int, cfg.Clients)
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(runID, uint64(w)))
			// Paced: client w's i-th append is due at start + (i + w/Clients)
			// * interval; a client that falls behind does not catch up in a
			// burst beyond what is due.
			var interval time.Duration
			if cfg.Rate > 0 {
				interval = time.Duration(float64(cfg.Clients) / cfg.Rate * float64(time.Second))
			}
			for i := 0; !timeUp() && ctx.Err() == nil; i++ {
				if interval > 0 {
					due := start.Add(time.Duration(i)*interval + time.Duration(w)*interval/time.Duration(cfg.Clients))
					if wait := time.Until(due); wait > 0 {
						select { // pacing, not synchronisation
						case <-time.After(wait):
						case <-ctx.Done():
						}
					}
					if timeUp() {
						break
					}
				}
				if cfg.Count > 0 && claimed.Add(1) > int64(cfg.Count) {
					break
				}
				tl := names[rng.IntN(len(names))]
				key := fmt.Sprintf("bench-%x-%d-%d", runID, w, i)
				opCtx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
				t0 := time.Now()
				err := appendFn(opCtx, w, tl, key, payload)
				d := time.Since(t0)
				cancel()
				if err != nil {
					errs[w]++
					errOnce.Do(func() { firstErr = err })
					continue
				}
				latencies[w] = append(latencies[w], d)
				acked[w] = append(acked[w], t0.Add(d))
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	res := Summarize(cfg, end.Sub(start), slices.Concat(latencies...))
	res.MaxGap = maxGap(start, end, slices.Concat(acked...))
	for _, e := range errs {
		res.Errors += e
	}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	return res, nil
}

// Summarize computes throughput and percentiles (nearest rank) from the
// latencies of successful appends.
func Summarize(cfg Config, elapsed time.Duration, lat []time.Duration) Result {
	slices.Sort(lat)
	r := Result{Config: cfg, Elapsed: elapsed, OK: len(lat)}
	if elapsed > 0 {
		r.PerSecond = float64(len(lat)) / elapsed.Seconds()
	}
	if len(lat) == 0 {
		return r
	}
	pct := func(p float64) time.Duration {
		i := int(p*float64(len(lat))+0.999999) - 1
		return lat[min(max(i, 0), len(lat)-1)]
	}
	r.P50, r.P90, r.P99, r.Max = pct(0.50), pct(0.90), pct(0.99), lat[len(lat)-1]
	return r
}

// timelineNames are the run's timelines: bench-0 .. bench-(n-1), or with
// Slots the first n names bench-i whose slot is in them.
func timelineNames(cfg Config) []string {
	names := make([]string, 0, cfg.Timelines)
	for i := 0; len(names) < cfg.Timelines; i++ {
		tl := fmt.Sprintf("bench-%d", i)
		if len(cfg.Slots) > 0 && !inSlots(shard.SlotOf(tl), cfg.Slots) {
			continue
		}
		names = append(names, tl)
	}
	return names
}

func inSlots(s shard.Slot, ranges []shard.Range) bool {
	for _, r := range ranges {
		if uint32(s) >= r.Start && uint32(s) < r.End {
			return true
		}
	}
	return false
}

// maxGap is the longest stretch of [start, end] without an acknowledgement.
func maxGap(start, end time.Time, acks []time.Time) time.Duration {
	slices.SortFunc(acks, func(a, b time.Time) int { return a.Compare(b) })
	gap, prev := time.Duration(0), start
	for _, a := range append(acks, end) {
		gap = max(gap, a.Sub(prev))
		prev = a
	}
	return gap
}
