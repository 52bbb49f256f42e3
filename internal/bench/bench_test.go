package bench

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncstore/syncstore/shard"
)

func TestSummarizePercentiles(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	r := Summarize(Config{}, 2*time.Second, lat)
	want := []struct {
		name      string
		got, want time.Duration
	}{
		{"p50", r.P50, 50 * time.Millisecond},
		{"p90", r.P90, 90 * time.Millisecond},
		{"p99", r.P99, 99 * time.Millisecond},
		{"max", r.Max, 100 * time.Millisecond},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("%s = %s, want %s", w.name, w.got, w.want)
		}
	}
	if r.OK != 100 || r.PerSecond != 50 {
		t.Errorf("ok %d, per second %v; want 100 and 50", r.OK, r.PerSecond)
	}
}

func TestRunCountsAppendsAndErrorsWithUniqueKeys(t *testing.T) {
	var mu sync.Mutex
	keys := map[string]bool{}
	var calls atomic.Int64
	cfg := Config{Clients: 4, PayloadBytes: 16, Timelines: 3, Duration: 50 * time.Millisecond, OpTimeout: time.Second}
	res, err := Run(context.Background(), cfg, func(ctx context.Context, w int, tl, key string, payload []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if keys[key] {
			t.Errorf("key %s used twice", key)
		}
		keys[key] = true
		if len(payload) != 16 {
			t.Errorf("payload of %d bytes", len(payload))
		}
		if calls.Add(1)%10 == 0 {
			return errors.New("boom")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if int64(res.OK+res.Errors) != calls.Load() || res.Errors == 0 || res.FirstError != "boom" {
		t.Fatalf("ok %d + errors %d != calls %d (first error %q)", res.OK, res.Errors, calls.Load(), res.FirstError)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	if _, err := Run(context.Background(), Config{}, nil); err == nil {
		t.Fatal("a zero config ran")
	}
}

// A paced run never goes faster than its rate: at most what was due by the
// end (a slow machine only makes it slower).
func TestRunPacesToTheRate(t *testing.T) {
	var calls atomic.Int64
	cfg := Config{Clients: 4, Timelines: 1, Duration: 300 * time.Millisecond, OpTimeout: time.Second, Rate: 200}
	res, err := Run(context.Background(), cfg, func(context.Context, int, string, string, []byte) error {
		calls.Add(1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	due := int64(cfg.Rate*cfg.Duration.Seconds()) + int64(cfg.Clients)
	if n := calls.Load(); n > due || n == 0 {
		t.Fatalf("%d appends in a %v run paced at %.0f/s (at most %d due)", n, cfg.Duration, cfg.Rate, due)
	}
	t.Logf("%d appends, %.0f/s", res.OK, res.PerSecond)
}

// A counted run makes exactly Count appends, errors included, with no time
// limit.
func TestRunStopsAtTheCount(t *testing.T) {
	var calls atomic.Int64
	cfg := Config{Clients: 8, Timelines: 5, Count: 1001, OpTimeout: time.Second}
	res, err := Run(context.Background(), cfg, func(context.Context, int, string, string, []byte) error {
		if calls.Add(1)%100 == 0 {
			return errors.New("boom")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1001 || res.OK+res.Errors != 1001 || res.Errors != 10 {
		t.Fatalf("%d calls, %d ok, %d errors; want 1001 calls, 10 errors", calls.Load(), res.OK, res.Errors)
	}
}

func TestMaxGap(t *testing.T) {
	start := time.Unix(100, 0)
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name string
		acks []time.Time
		end  time.Time
		want time.Duration
	}{
		{"none", nil, at(500), 500 * time.Millisecond},
		{"between", []time.Time{at(10), at(400), at(20)}, at(450), 380 * time.Millisecond},
		{"to the end", []time.Time{at(10)}, at(300), 290 * time.Millisecond},
	} {
		if got := maxGap(start, tc.end, tc.acks); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestTimelinesInSlots(t *testing.T) {
	r := shard.Range{Start: 10, End: 20}
	names := timelineNames(Config{Timelines: 50, Slots: []shard.Range{r}})
	if len(names) != 50 {
		t.Fatalf("%d names", len(names))
	}
	for _, n := range names {
		if s := uint32(shard.SlotOf(n)); s < r.Start || s >= r.End {
			t.Fatalf("%s is in slot %d", n, s)
		}
	}
	if err := (Config{Clients: 1, Timelines: 1, Duration: time.Second, OpTimeout: time.Second, Slots: []shard.Range{{Start: 5, End: 5}}}).Validate(); err == nil {
		t.Fatal("an empty slot range passed")
	}
}
