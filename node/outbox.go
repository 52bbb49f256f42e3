package node

import (
	"context"
	"errors"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/node/outbox"
	"github.com/syncstore/syncstore/shard"
)

// Delivery is one conversation message for one member's timeline.
type Delivery = outbox.Delivery

// outboxGroup is a data group as its outbox sees it.
type outboxGroup struct{ g *Group }

func (o outboxGroup) ReadyLeader() bool { return o.g.isReadyLeader() }

func (o outboxGroup) Conversations(limit int) ([]string, error) {
	return o.g.fsm.OutboxConversations(limit)
}

func (o outboxGroup) Jobs(conversation string, limit int) ([]fsm.OutboxJob, error) {
	return o.g.fsm.Outbox(conversation, limit)
}

func (o outboxGroup) Message(conversation string, seq uint64) (fsm.Entry, bool, error) {
	page, err := o.g.fsm.Pull(conversation, seq-1, 1, 0)
	if err != nil || len(page.Entries) != 1 || page.Entries[0].Seq != seq {
		return fsm.Entry{}, false, err
	}
	return page.Entries[0], true, nil
}

func (o outboxGroup) Done(ctx context.Context, conversation string, seq uint64) error {
	_, err := o.g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_DeliveryDone{DeliveryDone: &fsmpb.DeliveryDone{
		Conversation: conversation, ConversationSeq: seq,
	}}})
	return err
}

// outboxRouter routes an outbox's batches from this node.
type outboxRouter struct{ n *Node }

func (r outboxRouter) GroupFor(timeline string) (shard.GroupID, error) {
	m := r.n.shardMap()
	if m == nil {
		return 0, ErrNoShardMap
	}
	return m.GroupFor(timeline), nil
}

// Deliver applies a batch here when this node leads the group, else sends
// it to the leader's node.
func (r outboxRouter) Deliver(ctx context.Context, id shard.GroupID, batch []Delivery) error {
	var remote func(context.Context, string) error
	if d := r.n.cfg.Deliverer; d != nil {
		remote = func(ctx context.Context, addr string) error { _, err := d(ctx, addr, id, batch); return err }
	}
	return r.n.atLeader(ctx, func(ctx context.Context) error {
		_, err := r.n.Deliver(ctx, id, batch)
		return err
	}, remote)
}

// atLeader runs local here and, when it answers that another node leads
// the group, remote (if any: the config may leave the peer client out) at
// that node, all within ApplyTimeout: the background workers' way to reach
// a group's leader wherever it is.
func (n *Node) atLeader(ctx context.Context, local func(context.Context) error, remote func(ctx context.Context, addr string) error) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	err := local(ctx)
	var nl *NotLeaderError
	if errors.As(err, &nl) && nl.LeaderGRPCAddr != "" && nl.LeaderID != n.cfg.NodeID && remote != nil {
		err = remote(ctx, nl.LeaderGRPCAddr)
	}
	return err
}

func newGroupOutbox(g *Group) *outbox.Outbox {
	return outbox.New(outboxGroup{g}, outboxRouter{g.node}, g.log, func(result string) {
		g.node.metrics.deliveries.WithLabelValues(result).Inc()
	})
}

// PendingDeliveries reports whether the group's outbox still holds a
// message not yet delivered to every member.
func (g *Group) PendingDeliveries() (bool, error) {
	convs, err := g.fsm.OutboxConversations(1)
	return len(convs) > 0, err
}
