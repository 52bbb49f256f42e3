package take

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// pacer holds a backup's streaming to Options.MaxBytesPerSecond. Reading
// slower makes each group's leader wait on the stream's flow control, so
// the cluster's share of the work (serialising the state, sending it) is
// spread over a longer backup instead of competing with writes all at
// once. The leader's first pass over a group, its digest, is not paced.
type pacer struct {
	lim   *rate.Limiter
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
}

// minPaceBurst is the smallest burst: a chunk of this many bytes is never
// split into waits.
const minPaceBurst = 64 << 10

// newPacer is nil (no pacing) unless opts.MaxBytesPerSecond is set. Its
// burst is a tenth of a second's worth.
func newPacer(opts Options) *pacer {
	if opts.MaxBytesPerSecond <= 0 {
		return nil
	}
	sleep := opts.sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	burst := int(max(opts.MaxBytesPerSecond/10, minPaceBurst))
	return &pacer{lim: rate.NewLimiter(rate.Limit(opts.MaxBytesPerSecond), burst), now: opts.Now, sleep: sleep}
}

// wait returns once n more bytes fit the rate, or when ctx ends.
func (p *pacer) wait(ctx context.Context, n int) error {
	if p == nil {
		return nil
	}
	for n > 0 {
		k := min(n, p.lim.Burst())
		now := p.now()
		r := p.lim.ReserveN(now, k)
		if d := r.DelayFrom(now); d > 0 {
			if err := p.sleep(ctx, d); err != nil {
				r.CancelAt(p.now())
				return err
			}
		}
		n -= k
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
