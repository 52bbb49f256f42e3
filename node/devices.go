package node

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// LoginRequest registers or refreshes a device session.
type LoginRequest struct {
	User, DeviceID, Class, SessionID string
	Metadata                         map[string]string
}

// Login proposes a login to the user's group. The policy is this node's
// (parsed at start), carried in the command, and the state machine decides
// with it at apply.
func (n *Node) Login(ctx context.Context, req LoginRequest) (fsm.LoginResult, error) {
	l := &fsmpb.Login{User: req.User, DeviceId: req.DeviceID, DeviceClass: req.Class, SessionId: req.SessionID, Metadata: req.Metadata, Policy: n.loginPolicy}
	if err := fsm.ValidateLogin(l); err != nil {
		return fsm.LoginResult{}, err
	}
	res, err := n.proposeForUser(ctx, req.User, &fsmpb.Command{Op: &fsmpb.Command_Login{Login: l}})
	if err != nil {
		return fsm.LoginResult{}, err
	}
	return *res.Login, nil
}

// Logout ends a session.
func (n *Node) Logout(ctx context.Context, user, sessionID string) (fsm.LogoutResult, error) {
	l := &fsmpb.Logout{User: user, SessionId: sessionID}
	if err := fsm.ValidateLogout(l); err != nil {
		return fsm.LogoutResult{}, err
	}
	res, err := n.proposeForUser(ctx, user, &fsmpb.Command{Op: &fsmpb.Command_Logout{Logout: l}})
	if err != nil {
		return fsm.LogoutResult{}, err
	}
	return *res.Logout, nil
}

// Ack raises a device's cursor on one of its user's timelines.
func (n *Node) Ack(ctx context.Context, user, device, timeline string, seq uint64) (fsm.AckResult, error) {
	a := &fsmpb.AckCursor{User: user, DeviceId: device, Timeline: timeline, Seq: seq}
	if err := fsm.ValidateAckCursor(a); err != nil {
		return fsm.AckResult{}, err
	}
	res, err := n.proposeForUser(ctx, user, &fsmpb.Command{Op: &fsmpb.Command_AckCursor{AckCursor: a}})
	if err != nil {
		return fsm.AckResult{}, err
	}
	return *res.Ack, nil
}

// MarkRead raises the user's read marker of a conversation.
func (n *Node) MarkRead(ctx context.Context, user, conversation string, seq uint64) (fsm.MarkReadResult, error) {
	m := &fsmpb.MarkRead{User: user, Conversation: conversation, Seq: seq}
	if err := fsm.ValidateMarkRead(m); err != nil {
		return fsm.MarkReadResult{}, err
	}
	res, err := n.proposeForUser(ctx, user, &fsmpb.Command{Op: &fsmpb.Command_MarkRead{MarkRead: m}})
	if err != nil {
		return fsm.MarkReadResult{}, err
	}
	return *res.MarkRead, nil
}

func (n *Node) proposeForUser(ctx context.Context, user string, cmd *fsmpb.Command) (*fsm.Result, error) {
	if err := n.storage.CheckSpace(); err != nil {
		return nil, err
	}
	g, err := n.route(user)
	if err != nil {
		return nil, err
	}
	return g.propose(ctx, cmd)
}

// userGroup returns the local replica to read a user's device state from,
// once it may be read with consistency c.
func (n *Node) userGroup(ctx context.Context, user string, c Consistency) (*Group, error) {
	return n.readGroup(ctx, user, fsm.ValidateUser, c)
}

// ValidateSession says whether a session is valid; a gateway asks it to
// fence a kicked device. It counts as the device being seen.
func (n *Node) ValidateSession(ctx context.Context, user, sessionID string, c Consistency) (fsm.SessionState, fsm.Session, error) {
	if err := fsm.ValidateSessionID(sessionID); err != nil {
		return 0, fsm.Session{}, err
	}
	g, err := n.userGroup(ctx, user, c)
	if err != nil {
		return 0, fsm.Session{}, err
	}
	state, s, err := g.fsm.ValidateSession(user, sessionID)
	if err == nil && state == fsm.SessionValid {
		g.touches.seen(user, s.DeviceID, n.cfg.Clock())
	}
	return state, s, g.afterRead(user, err)
}

// Cursors reads a device's cursors, with the heads they lag behind. It
// counts as the device being seen.
func (n *Node) Cursors(ctx context.Context, user, device string, c Consistency) ([]fsm.Cursor, error) {
	if err := fsm.ValidateDeviceID(device); err != nil {
		return nil, err
	}
	g, err := n.userGroup(ctx, user, c)
	if err != nil {
		return nil, err
	}
	cs, err := g.fsm.Cursors(user, device)
	if err == nil {
		g.touches.seen(user, device, n.cfg.Clock())
	}
	return cs, g.afterRead(user, err)
}

// Devices reads a user's sessions with their cursors.
func (n *Node) Devices(ctx context.Context, user string, c Consistency) (fsm.UserDevices, error) {
	g, err := n.userGroup(ctx, user, c)
	if err != nil {
		return fsm.UserDevices{}, err
	}
	d, err := g.fsm.Devices(user)
	return d, g.afterRead(user, err)
}

// Conversations reads a page of a user's conversation list.
func (n *Node) Conversations(ctx context.Context, user, afterKey string, limit int, c Consistency) (fsm.ConversationList, error) {
	if err := n.pageLimit(&limit); err != nil {
		return fsm.ConversationList{}, err
	}
	g, err := n.userGroup(ctx, user, c)
	if err != nil {
		return fsm.ConversationList{}, err
	}
	l, err := g.fsm.Conversations(user, afterKey, limit)
	return l, g.afterRead(user, err)
}

type deviceKey struct{ user, device string }

// touches gathers the devices a group's leader saw, to propose their
// last-seen time at most once per DeviceTouchEvery per device: coarse soft
// state, never a proposal per request.
type touches struct {
	mu      sync.Mutex
	last    map[deviceKey]time.Time // when each device was last queued
	pending []deviceKey
}

func (t *touches) seen(user, device string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := deviceKey{user: user, device: device}
	if _, ok := t.last[k]; ok {
		return
	}
	if t.last == nil {
		t.last = map[deviceKey]time.Time{}
	}
	t.last[k] = now
	t.pending = append(t.pending, k)
}

// take returns the devices to propose, and forgets those queued longer
// than every ago, so they may be queued again.
func (t *touches) take(now time.Time, every time.Duration) []deviceKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.pending
	t.pending = nil
	for k, at := range t.last {
		if now.Sub(at) >= every {
			delete(t.last, k)
		}
	}
	return out
}

// touchLoop proposes the devices seen, in commands of at most
// fsm.MaxTouchItems, while this replica leads; what it cannot propose is
// dropped (soft state: the next request queues it again).
func (g *Group) touchLoop(ctx context.Context) {
	every := g.node.cfg.DeviceTouchEvery
	tick := time.NewTicker(min(every, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		keys := g.touches.take(g.node.cfg.Clock(), every)
		for chunk := range slices.Chunk(keys, fsm.MaxTouchItems) {
			if !g.isReadyLeader() {
				break
			}
			t := &fsmpb.TouchDevices{}
			for _, k := range chunk {
				t.Items = append(t.Items, &fsmpb.DeviceRef{User: k.user, DeviceId: k.device})
			}
			if _, err := g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_TouchDevices{TouchDevices: t}}); err != nil {
				g.log.Debug("device touch dropped", "devices", len(chunk), "err", err)
			}
		}
	}
}
