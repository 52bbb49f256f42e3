package node

import (
	"context"
	"fmt"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// SendRequest is a message to a conversation and its members.
type SendRequest struct {
	Conversation   string
	Sender         string
	Recipients     []string
	Payload        []byte
	IdempotencyKey string
	Metadata       map[string]string
}

// Send appends a message to the conversation and queues its delivery to
// every member's timeline, in one replicated command: once it returns, the
// conversation group will deliver it, whatever fails afterwards.
func (n *Node) Send(ctx context.Context, req SendRequest) (fsm.SendResult, error) {
	s := &fsmpb.Send{
		Conversation:   req.Conversation,
		Sender:         req.Sender,
		Recipients:     req.Recipients,
		Payload:        req.Payload,
		IdempotencyKey: req.IdempotencyKey,
		Metadata:       req.Metadata,
		DedupeWindowMs: n.cfg.DedupeWindow.Milliseconds(),
		LightAbove:     uint32(n.cfg.LightAbove),
	}
	if err := n.checkPayload(s.GetPayload()); err != nil {
		return fsm.SendResult{}, err
	}
	if err := n.storage.CheckSpace(); err != nil {
		return fsm.SendResult{}, err
	}
	if err := fsm.ValidateSend(s); err != nil {
		return fsm.SendResult{}, err
	}
	g, err := n.route(req.Conversation)
	if err != nil {
		return fsm.SendResult{}, err
	}
	res, err := g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Send{Send: s}})
	if err != nil {
		return fsm.SendResult{}, err
	}
	return *res.Send, nil
}

// Deliverer sends deliveries for a group to the node at grpcAddr, which
// applies them or forwards them to the group's leader. The rpc layer
// provides it.
type Deliverer func(ctx context.Context, grpcAddr string, group shard.GroupID, items []Delivery) (fsm.DeliverResult, error)

// Deliver applies deliveries to a group this node leads; otherwise the
// error names the leader (a *NotLeaderError) for the rpc layer to forward.
func (n *Node) Deliver(ctx context.Context, group shard.GroupID, items []Delivery) (fsm.DeliverResult, error) {
	d := &fsmpb.Deliver{Items: make([]*fsmpb.DeliveryItem, len(items))}
	for i, it := range items {
		d.Items[i] = &fsmpb.DeliveryItem{
			Timeline:        it.Timeline,
			Conversation:    it.Conversation,
			ConversationSeq: it.ConversationSeq,
			Sender:          it.Sender,
			Payload:         it.Payload,
			Light:           it.Light,
			Metadata:        it.Metadata,
			DeliverySeq:     it.DeliverySeq,
		}
		if err := n.checkPayload(it.Payload); err != nil {
			return fsm.DeliverResult{}, fmt.Errorf("item %d: %w", i, err)
		}
	}
	if err := n.storage.CheckSpace(); err != nil {
		return fsm.DeliverResult{}, err // the outbox retries later
	}
	if err := fsm.ValidateDeliver(d); err != nil {
		return fsm.DeliverResult{}, err
	}
	g, err := n.dataGroup(group, "deliveries")
	if err != nil {
		return fsm.DeliverResult{}, err
	}
	res, err := g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Deliver{Deliver: d}})
	if err != nil {
		return fsm.DeliverResult{}, err
	}
	return *res.Deliver, nil
}

// History reads a page of a timeline backwards (see fsm.FSM.History).
func (n *Node) History(ctx context.Context, timeline string, before uint64, limit int, c Consistency) (fsm.HistoryResult, error) {
	g, err := n.pageGroup(ctx, timeline, &limit, c)
	if err != nil {
		return fsm.HistoryResult{}, err
	}
	res, err := g.fsm.History(timeline, before, limit, n.cfg.MaxPageBytes)
	return res, g.afterRead(timeline, err)
}

// dataGroup is the local replica of a data group named by a peer's request
// (what: the request, for the message), or why there is none here: the
// meta group, a group the map does not have, or one hosted elsewhere.
func (n *Node) dataGroup(id shard.GroupID, what string) (*Group, error) {
	if g := n.Group(id); g != nil {
		return g, nil
	}
	if id == shard.MetaGroup {
		return nil, fmt.Errorf("%w: %s go to data groups, not the meta group", ErrUnknownGroup, what)
	}
	if m := n.shardMap(); m != nil && !m.Has(id) {
		return nil, fmt.Errorf("%w: group %d is not in shard map v%d", ErrUnknownGroup, id, m.Version)
	}
	return nil, n.notHosted(id)
}
