// Package batch gathers requests that arrive together into batches and runs
// each batch as one unit, with a bounded number of batches in flight.
//
// A Raft group pays per log entry and per replication round: a log record,
// a replication message to each follower, an apply call, a future and a
// goroutine to wait on it. With many groups on a node each group sees only
// a share of the clients, and without batching its rounds shrink to an
// entry or two, so the node's cost per write grows with the number of
// groups. A Batcher in front of the group turns "whatever arrived while the
// previous batch was being committed" into one entry. It never waits for
// more work: a lone request runs at once, on its caller's goroutine, so a
// single client's latency is unchanged. See DESIGN.md.
package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrClosed: the batcher is closed; the request was not run.
var ErrClosed = errors.New("batch: closed")

// ErrNotSent wraps why a request was certainly not run: its context ended
// before it joined a batch, or too many requests were already waiting.
var ErrNotSent = errors.New("batch: request not sent")

// Limits bound one batch.
type Limits struct {
	// MaxItems bounds the requests of a batch (at least 1).
	MaxItems int
	// MaxBytes bounds the summed Size of a batch's requests; a request
	// bigger than MaxBytes goes alone.
	MaxBytes int
	// MaxInFlight bounds the batches being run at once (at least 1). While
	// they run, new requests queue and form the next batch.
	MaxInFlight int
	// Queue bounds the requests waiting for a batch; past it Do refuses
	// (ErrNotSent) rather than let a backlog grow without bound.
	Queue int
}

// Outcome is what running a batch gave one of its requests.
type Outcome[Res any] struct {
	Res Res
	Err error
}

// Batcher runs requests in batches through run, which must return one
// Outcome per request, in order, or an error that fails them all.
type Batcher[Req, Res any] struct {
	run    func([]Req) ([]Outcome[Res], error)
	size   func(Req) int
	limits Limits

	mu       sync.Mutex
	queue    []*call[Req, Res] // waiting for a batch, in arrival order
	inFlight int
	closed   bool
	// running counts the batches being run, so Close can wait for them.
	running sync.WaitGroup
	// queued counts the calls that joined the queue (tests wait on it).
	queued int
}

type call[Req, Res any] struct {
	ctx  context.Context
	req  Req
	done chan Outcome[Res]
}

// New makes a batcher. size gives a request's weight against
// Limits.MaxBytes.
func New[Req, Res any](limits Limits, size func(Req) int, run func([]Req) ([]Outcome[Res], error)) (*Batcher[Req, Res], error) {
	if limits.MaxItems < 1 || limits.MaxInFlight < 1 || limits.MaxBytes < 1 || limits.Queue < 1 {
		return nil, fmt.Errorf("batch: limits %+v: every limit must be at least 1", limits)
	}
	return &Batcher[Req, Res]{run: run, size: size, limits: limits}, nil
}

// Do runs req in a batch and returns its outcome. An error wrapping
// ErrNotSent means req was not run. If ctx ends once req is in a batch,
// Do returns ctx.Err() and req's outcome is unknown to the caller.
//
// When no batch is running, the caller runs its own batch (itself and
// whatever queued meanwhile) on its goroutine: nothing is handed over. A
// batch that queued while another ran is run on a goroutine of its own.
func (b *Batcher[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	var zero Res
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	c := &call[Req, Res]{ctx: ctx, req: req, done: make(chan Outcome[Res], 1)}
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return zero, ErrClosed
	case len(b.queue) >= b.limits.Queue:
		b.mu.Unlock()
		return zero, fmt.Errorf("%w: %d requests are already waiting", ErrNotSent, len(b.queue))
	}
	b.queue = append(b.queue, c)
	b.queued++
	var first []*call[Req, Res]
	if b.inFlight < b.limits.MaxInFlight {
		first = b.takeLocked()
	}
	b.mu.Unlock()
	if first != nil {
		b.runBatch(first)
		b.next()
	}
	select {
	case o := <-c.done:
		return o.Res, o.Err
	case <-ctx.Done():
		select { // answered meanwhile: say so rather than "unknown"
		case o := <-c.done:
			return o.Res, o.Err
		default:
		}
		return zero, ctx.Err()
	}
}

// takeLocked starts a batch of the oldest queued calls within the limits.
func (b *Batcher[Req, Res]) takeLocked() []*call[Req, Res] {
	n, bytes := 0, 0
	for n < len(b.queue) && n < b.limits.MaxItems {
		s := b.size(b.queue[n].req)
		if n > 0 && bytes+s > b.limits.MaxBytes {
			break
		}
		bytes += s
		n++
	}
	batch := append([]*call[Req, Res](nil), b.queue[:n]...)
	clear(b.queue[:n])
	b.queue = b.queue[n:]
	b.inFlight++
	b.running.Add(1)
	return batch
}

// next ends a batch: its slot goes to the calls that queued meanwhile, run
// on a goroutine of their own (the caller that ran the batch has its answer
// and goes back to its client).
func (b *Batcher[Req, Res]) next() {
	b.mu.Lock()
	b.inFlight--
	var batch []*call[Req, Res]
	if len(b.queue) > 0 { // empty once closed
		batch = b.takeLocked()
	}
	b.mu.Unlock()
	b.running.Done()
	if batch != nil {
		go func() {
			b.runBatch(batch)
			b.next()
		}()
	}
}

// runBatch runs the calls of a batch whose contexts are still live and
// answers each.
func (b *Batcher[Req, Res]) runBatch(batch []*call[Req, Res]) {
	live := batch[:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.done <- Outcome[Res]{Err: fmt.Errorf("%w: %w", ErrNotSent, err)}
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	reqs := make([]Req, len(live))
	for i, c := range live {
		reqs[i] = c.req
	}
	outs, err := b.run(reqs)
	if err == nil && len(outs) != len(live) {
		err = fmt.Errorf("batch: run answered %d outcomes for %d requests", len(outs), len(live))
	}
	for i, c := range live {
		if err != nil {
			c.done <- Outcome[Res]{Err: err}
		} else {
			c.done <- outs[i]
		}
	}
}

// Close answers every queued request with ErrClosed, starts no batch and
// waits for the batches being run to finish (run must return).
func (b *Batcher[Req, Res]) Close() {
	b.mu.Lock()
	b.closed = true
	queued := b.queue
	b.queue = nil
	b.mu.Unlock()
	for _, c := range queued {
		c.done <- Outcome[Res]{Err: ErrClosed}
	}
	b.running.Wait()
}

// queuedCount is how many calls joined the queue so far.
func (b *Batcher[Req, Res]) queuedCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queued
}
