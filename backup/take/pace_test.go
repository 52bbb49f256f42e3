package take

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"
	"time"
)

// manualClock is a clock that moves only when a paced backup sleeps.
type manualClock struct {
	now    time.Time
	slept  time.Duration
	sleeps int
}

func (c *manualClock) Now() time.Time { return c.now }

func (c *manualClock) Sleep(_ context.Context, d time.Duration) error {
	c.now, c.slept, c.sleeps = c.now.Add(d), c.slept+d, c.sleeps+1
	return nil
}

// TestBackupPacedToMaxBytesPerSecond: a paced backup waits as long as its
// bytes beyond the first burst take at the rate, so it reports the rate
// as its throughput; unpaced, it never waits.
func TestBackupPacedToMaxBytesPerSecond(t *testing.T) {
	const rate = 1 << 20
	f := newFake()
	var total int64
	for _, g := range f.groups {
		total += g.size
	}
	for _, tc := range []struct {
		name      string
		max       int64
		wantSlept time.Duration
	}{
		{"unpaced", 0, 0},
		{"1 MiB/s", rate, time.Duration(float64(total-rate/10) / rate * float64(time.Second))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &manualClock{now: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)}
			out := filepath.Join(t.TempDir(), "b.ssb")
			res, err := Run(context.Background(), newFake(), Options{Out: out, Now: clock.Now, MaxBytesPerSecond: tc.max, sleep: clock.Sleep})
			if err != nil {
				t.Fatal(err)
			}
			if off := math.Abs(float64(clock.slept - tc.wantSlept)); off > 0.01*float64(tc.wantSlept) {
				t.Fatalf("slept %v in %d sleeps, want %v", clock.slept, clock.sleeps, tc.wantSlept)
			}
			if tc.max > 0 {
				if got, want := res.MBps, float64(tc.max)/1e6; math.Abs(got-want) > 0.05*want {
					t.Fatalf("a backup paced to %d B/s reports %.3f MB/s", tc.max, got)
				}
			}
		})
	}
}

// TestPacedBackupStopsWithItsContext: a backup cancelled while it waits
// fails with the context's error and leaves no file.
func TestPacedBackupStopsWithItsContext(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "b.ssb")
	clock := &manualClock{now: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)}
	stop := func(context.Context, time.Duration) error { return context.Canceled }
	_, err := Run(context.Background(), newFake(), Options{Out: out, Now: clock.Now, MaxBytesPerSecond: 1 << 20, sleep: stop})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a backup cancelled in its wait: %v", err)
	}
	if left := leftovers(t, dir); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
}
