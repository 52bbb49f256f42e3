// Package outbox works off a data group's pending conversation deliveries
// while the group's replica on this node is its ready leader: store first,
// then sync. A Send stores the message in the conversation's timeline and
// queues one job in the same command; the outbox puts the message into
// every member's timeline and then removes the job, so a leader change or
// a crash only delays a delivery, and a re-delivery writes nothing (the
// member timeline's per-conversation mark, see fsm.applyDeliver).
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/shard"
)

const (
	// rescan is how often a leader looks at its outbox without being
	// woken (jobs a previous leader left, failed deliveries).
	rescan = time.Second
	// workers bounds the conversations delivered at once per group.
	workers = 16
	// scan is how many conversations with pending jobs one look lists.
	scan = 1024
	// jobsPerRead is how many jobs of a conversation are read at once.
	jobsPerRead = 64
	// batchBytes bounds the payload bytes of one Deliver command.
	batchBytes = 4 << 20
	// backoffMax bounds the wait before retrying a failed delivery.
	backoffMax = 2 * time.Second
	backoffMin = 50 * time.Millisecond
)

// Delivery is one conversation message for one member's timeline.
type Delivery struct {
	Timeline        string
	Conversation    string
	ConversationSeq uint64
	Sender          string
	Payload         []byte
	Light           bool
	Metadata        map[string]string
	// DeliverySeq is the message's position among the conversation's
	// messages to Timeline (see fsm.applyDeliver).
	DeliverySeq uint64
}

// Group is the data group an outbox works for.
type Group interface {
	// ReadyLeader: this replica leads the group and has applied everything
	// committed before its term.
	ReadyLeader() bool
	// Conversations lists up to limit conversations with pending jobs.
	Conversations(limit int) ([]string, error)
	// Jobs lists up to limit of a conversation's jobs, in order.
	Jobs(conversation string, limit int) ([]fsm.OutboxJob, error)
	// Message reads one message of the conversation's timeline; ok is false
	// when retention trimmed it.
	Message(conversation string, seq uint64) (e fsm.Entry, ok bool, err error)
	// Done removes a delivered job through the group's log.
	Done(ctx context.Context, conversation string, seq uint64) error
}

// Router reaches the groups that own member timelines.
type Router interface {
	// GroupFor is the group owning timeline in the current shard map.
	GroupFor(timeline string) (shard.GroupID, error)
	// Deliver applies one batch to a group, wherever its leader is.
	Deliver(ctx context.Context, group shard.GroupID, batch []Delivery) error
}

// Outbox is one data group's delivery worker. Each conversation has at
// most one worker goroutine, which delivers its messages one at a time in
// conversation order: a message reaches every member before the next one
// starts.
type Outbox struct {
	group  Group
	router Router
	log    *slog.Logger
	// counted is told of each delivery: "ok" or "retry".
	counted func(result string)
	wake    chan struct{}

	mu      sync.Mutex
	running map[string]bool
}

// New returns an outbox for group; Run it.
func New(group Group, router Router, log *slog.Logger, counted func(result string)) *Outbox {
	return &Outbox{group: group, router: router, log: log, counted: counted, wake: make(chan struct{}, 1), running: map[string]bool{}}
}

// Poke wakes the outbox; it never blocks (called on the apply path).
func (o *Outbox) Poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Run works off the outbox until ctx ends, and waits for its workers.
func (o *Outbox) Run(ctx context.Context) {
	tick := time.NewTicker(rescan)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-tick.C:
		}
		if !o.group.ReadyLeader() {
			continue
		}
		convs, err := o.group.Conversations(scan)
		if err != nil {
			o.log.Warn("read outbox", "err", err)
			continue
		}
		for _, conv := range convs {
			o.mu.Lock()
			start := !o.running[conv] && len(o.running) < workers
			if start {
				o.running[conv] = true
			}
			o.mu.Unlock()
			if start {
				wg.Go(func() { o.work(ctx, conv) })
			}
		}
	}
}

// work delivers a conversation's pending messages in order until none is
// left, leadership is lost or ctx ends; a failed message is retried with
// backoff before the next one is tried.
func (o *Outbox) work(ctx context.Context, conv string) {
	defer func() {
		o.mu.Lock()
		delete(o.running, conv)
		o.mu.Unlock()
		o.Poke() // other conversations may be waiting for a worker
	}()
	backoff := backoffMin
	for ctx.Err() == nil && o.group.ReadyLeader() {
		jobs, err := o.group.Jobs(conv, jobsPerRead)
		if err != nil || len(jobs) == 0 {
			return
		}
		for _, job := range jobs {
			if err := o.deliver(ctx, job); err != nil {
				o.counted("retry")
				o.log.Debug("delivery failed; will retry", "conversation", conv, "seq", job.ConversationSeq, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(backoff): // backoff, not synchronisation
				}
				backoff = min(2*backoff, backoffMax)
				break
			}
			o.counted("ok")
			backoff = backoffMin
		}
	}
}

// deliver puts one message into every recipient's timeline, then removes
// its job.
func (o *Outbox) deliver(ctx context.Context, job fsm.OutboxJob) error {
	base := Delivery{Conversation: job.Conversation, ConversationSeq: job.ConversationSeq, Sender: job.Sender, Light: job.Light}
	e, ok, err := o.group.Message(job.Conversation, job.ConversationSeq)
	if err != nil {
		return err
	}
	if ok {
		base.Metadata = e.Metadata
		if !job.Light {
			base.Payload = e.Payload
		}
	} else {
		base.Light = true // trimmed before it was delivered: members read what is kept
	}
	if len(job.DeliverySeqs) != len(job.Recipients) {
		return fmt.Errorf("conversation %q seq %d was queued by an older binary without delivery seqs: drain outboxes before upgrading", job.Conversation, job.ConversationSeq)
	}
	byGroup := map[shard.GroupID][]Delivery{}
	for i, r := range job.Recipients {
		d := base
		d.Timeline, d.DeliverySeq = r, job.DeliverySeqs[i]
		id, err := o.router.GroupFor(r)
		if err != nil {
			return err
		}
		byGroup[id] = append(byGroup[id], d)
	}
	errs := make(chan error, len(byGroup))
	var wg sync.WaitGroup
	for id, items := range byGroup {
		wg.Go(func() {
			for _, batch := range batches(items) {
				if err := o.router.Deliver(ctx, id, batch); err != nil {
					errs <- fmt.Errorf("group %d: %w", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		return err
	}
	return o.group.Done(ctx, job.Conversation, job.ConversationSeq)
}

// batches splits deliveries into Deliver commands within the item and byte
// bounds.
func batches(items []Delivery) [][]Delivery {
	var out [][]Delivery
	for len(items) > 0 {
		n, size := 0, 0
		for n < len(items) && n < fsm.MaxDeliveryItems {
			size += len(items[n].Payload)
			if n > 0 && size > batchBytes {
				break
			}
			n++
		}
		out = append(out, slices.Clip(items[:n]))
		items = items[n:]
	}
	return out
}
