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
// more work: a lone request is sent at once, so a single client's latency
// is unchanged. See DESIGN.md.
package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrClosed: the batcher is closed; the request was not sent.
var ErrClosed = errors.New("batch: closed")

// ErrNotSent wraps the context error of a request whose context ended
// before it joined a batch: it was certainly not run.
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
	// Queue bounds the requests waiting for a batch; Do blocks (within its
	// context) while it is full.
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

	queue chan *call[Req, Res]
	slots chan struct{}
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	// enqueue is held (read) by Do while it puts a call in the queue, so
	// that Close, once it has taken it, knows no call can still arrive and
	// drains the queue for good.
	enqueue sync.RWMutex
	// queued counts the calls put in the queue (tests wait on it).
	queued atomic.Int64
}

type call[Req, Res any] struct {
	ctx  context.Context
	req  Req
	done chan Outcome[Res]
}

// New starts a batcher. size gives a request's weight against
// Limits.MaxBytes. Close stops it.
func New[Req, Res any](limits Limits, size func(Req) int, run func([]Req) ([]Outcome[Res], error)) (*Batcher[Req, Res], error) {
	if limits.MaxItems < 1 || limits.MaxInFlight < 1 || limits.MaxBytes < 1 || limits.Queue < 1 {
		return nil, fmt.Errorf("batch: limits %+v: every limit must be at least 1", limits)
	}
	b := &Batcher[Req, Res]{
		run: run, size: size, limits: limits,
		queue: make(chan *call[Req, Res], limits.Queue),
		slots: make(chan struct{}, limits.MaxInFlight),
		stop:  make(chan struct{}),
	}
	b.wg.Go(b.loop)
	return b, nil
}

// Do runs req in the next batch and returns its outcome. If ctx ends before
// req joined a batch, the error wraps ErrNotSent (req was not run); if it
// ends after, Do returns ctx.Err() and req's outcome is unknown to the
// caller.
func (b *Batcher[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	var zero Res
	c := &call[Req, Res]{ctx: ctx, req: req, done: make(chan Outcome[Res], 1)}
	if err := b.put(c); err != nil {
		return zero, err
	}
	select {
	case o := <-c.done:
		return o.Res, o.Err
	case <-ctx.Done():
		// The loop answers done either way; the caller stops waiting.
		select {
		case o := <-c.done:
			return o.Res, o.Err
		default:
		}
		return zero, ctx.Err()
	}
}

func (b *Batcher[Req, Res]) put(c *call[Req, Res]) error {
	b.enqueue.RLock()
	defer b.enqueue.RUnlock()
	select {
	case <-b.stop:
		return ErrClosed
	default:
	}
	select {
	case b.queue <- c:
		b.queued.Add(1)
		return nil
	case <-c.ctx.Done():
		return fmt.Errorf("%w: %w", ErrNotSent, c.ctx.Err())
	case <-b.stop:
		return ErrClosed
	}
}

// Close stops forming batches, waits for the batches in flight to finish
// (run must return) and answers every request still queued with ErrClosed.
func (b *Batcher[Req, Res]) Close() {
	b.once.Do(func() {
		close(b.stop) // wakes a Do blocked on a full queue
		b.enqueue.Lock()
		b.enqueue.Unlock() // no Do is putting a call any more
		b.wg.Wait()
		b.drain()
	})
}

func (b *Batcher[Req, Res]) loop() {
	var held *call[Req, Res] // taken from the queue but over the last batch's limits
	for {
		select { // a slot first: while none is free, requests queue up
		case b.slots <- struct{}{}:
		case <-b.stop:
			b.answer(held, ErrClosed)
			return
		}
		first := held
		held = nil
		if first == nil {
			select {
			case first = <-b.queue:
			case <-b.stop:
				<-b.slots
				return
			}
		}
		batch := []*call[Req, Res]{first}
		bytes := b.size(first.req)
	gather:
		for len(batch) < b.limits.MaxItems {
			select {
			case c := <-b.queue:
				if s := b.size(c.req); bytes+s > b.limits.MaxBytes {
					held = c
					break gather
				} else {
					bytes += s
				}
				batch = append(batch, c)
			default:
				break gather
			}
		}
		b.wg.Go(func() {
			defer func() { <-b.slots }()
			b.runBatch(batch)
		})
	}
}

// runBatch runs the requests of a batch whose contexts are still live and
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

// drain answers whatever is still queued once nothing else reads the queue.
func (b *Batcher[Req, Res]) drain() {
	for {
		select {
		case c := <-b.queue:
			b.answer(c, ErrClosed)
		default:
			return
		}
	}
}

func (b *Batcher[Req, Res]) answer(c *call[Req, Res], err error) {
	if c != nil {
		c.done <- Outcome[Res]{Err: err}
	}
}
