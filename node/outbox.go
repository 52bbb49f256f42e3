package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

const (
	// outboxRescan is how often a leader looks at its outbox without being
	// woken (jobs a previous leader left, failed deliveries).
	outboxRescan = time.Second
	// outboxWorkers bounds the conversations delivered at once per group.
	outboxWorkers = 16
	// outboxScan is how many conversations with pending jobs one look lists.
	outboxScan = 1024
	// outboxJobsPerRead is how many jobs of a conversation are read at once.
	outboxJobsPerRead = 64
	// deliverBatchBytes bounds the payload bytes of one Deliver command.
	deliverBatchBytes = 4 << 20
	// outboxBackoffMax bounds the wait before retrying a failed delivery.
	outboxBackoffMax = 2 * time.Second
)

// outbox works off a data group's pending deliveries while this replica is
// the group's ready leader. Each conversation has at most one worker, which
// delivers its messages one at a time in conversation order: a message
// reaches every member before the next one starts, so a member timeline's
// per-conversation mark (see fsm.applyDeliver) makes re-deliveries, by this
// leader or a deposed one still finishing, write nothing.
type outbox struct {
	g    *Group
	wake chan struct{}

	mu      sync.Mutex
	running map[string]bool
}

func newOutbox(g *Group) *outbox {
	return &outbox{g: g, wake: make(chan struct{}, 1), running: map[string]bool{}}
}

// poke wakes the loop; it never blocks (called on the apply path).
func (o *outbox) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *outbox) loop(ctx context.Context) {
	tick := time.NewTicker(outboxRescan)
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
		if !o.g.isReadyLeader() {
			continue
		}
		convs, err := o.g.fsm.OutboxConversations(outboxScan)
		if err != nil {
			o.g.log.Warn("read outbox", "err", err)
			continue
		}
		for _, conv := range convs {
			o.mu.Lock()
			start := !o.running[conv] && len(o.running) < outboxWorkers
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
func (o *outbox) work(ctx context.Context, conv string) {
	defer func() {
		o.mu.Lock()
		delete(o.running, conv)
		o.mu.Unlock()
		o.poke() // other conversations may be waiting for a worker
	}()
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil && o.g.isReadyLeader() {
		jobs, err := o.g.fsm.Outbox(conv, outboxJobsPerRead)
		if err != nil || len(jobs) == 0 {
			return
		}
		for _, job := range jobs {
			if err := o.deliver(ctx, job); err != nil {
				o.g.node.metrics.deliveries.WithLabelValues("retry").Inc()
				o.g.log.Debug("delivery failed; will retry", "conversation", conv, "seq", job.ConversationSeq, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, outboxBackoffMax)
				break
			}
			o.g.node.metrics.deliveries.WithLabelValues("ok").Inc()
			backoff = 50 * time.Millisecond
		}
	}
}

// deliver puts one message into every recipient's timeline, then removes
// its job.
func (o *outbox) deliver(ctx context.Context, job fsm.OutboxJob) error {
	n := o.g.node
	m := n.shardMap()
	if m == nil {
		return ErrNoShardMap
	}
	base := Delivery{Conversation: job.Conversation, ConversationSeq: job.ConversationSeq, Sender: job.Sender, Light: job.Light}
	page, err := o.g.fsm.Pull(job.Conversation, job.ConversationSeq-1, 1, 0)
	if err != nil {
		return err
	}
	if len(page.Entries) == 1 && page.Entries[0].Seq == job.ConversationSeq {
		base.Metadata = page.Entries[0].Metadata
		if !job.Light {
			base.Payload = page.Entries[0].Payload
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
		id := m.GroupFor(r)
		byGroup[id] = append(byGroup[id], d)
	}
	errs := make(chan error, len(byGroup))
	var wg sync.WaitGroup
	for id, items := range byGroup {
		wg.Go(func() {
			for _, batch := range batches(items) {
				if err := o.deliverBatch(ctx, id, batch); err != nil {
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
	_, err = o.g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_DeliveryDone{DeliveryDone: &fsmpb.DeliveryDone{
		Conversation: job.Conversation, ConversationSeq: job.ConversationSeq,
	}}})
	return err
}

func (o *outbox) deliverBatch(ctx context.Context, id shard.GroupID, batch []Delivery) error {
	n := o.g.node
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	_, err := n.Deliver(ctx, id, batch)
	var nl *NotLeaderError
	if errors.As(err, &nl) && nl.LeaderGRPCAddr != "" && nl.LeaderID != n.cfg.NodeID && n.cfg.Deliverer != nil {
		_, err = n.cfg.Deliverer(ctx, nl.LeaderGRPCAddr, id, batch)
	}
	return err
}

// batches splits deliveries into Deliver commands within the item and byte
// bounds.
func batches(items []Delivery) [][]Delivery {
	var out [][]Delivery
	for len(items) > 0 {
		n, size := 0, 0
		for n < len(items) && n < fsm.MaxDeliveryItems {
			size += len(items[n].Payload)
			if n > 0 && size > deliverBatchBytes {
				break
			}
			n++
		}
		out = append(out, slices.Clip(items[:n]))
		items = items[n:]
	}
	return out
}

// PendingDeliveries reports whether the group's outbox still holds a
// message not yet delivered to every member.
func (g *Group) PendingDeliveries() (bool, error) {
	convs, err := g.fsm.OutboxConversations(1)
	return len(convs) > 0, err
}
