package main

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// Devices of the session workload: every user has two phones (so the
// default one-per-class policy kicks), a desktop and a web client.
var sessionDevices = []struct{ id, class string }{{"phone-a", "phone"}, {"phone-b", "phone"}, {"desk", "desktop"}, {"web", "web"}}

// sessionUsers: the users whose devices log in, ack and read; they are
// conversation members, so their lists and unread counts move.
const sessionUsers = 16

// sessions is what one worker remembers of its logins, to reconnect and
// log out with a session it made.
type sessions struct {
	last map[[2]string]string // (user, device) -> the worker's newest session there
	made []history.Op         // its logins, for logouts
}

func newSessions() *sessions { return &sessions{last: map[[2]string]string{}} }

// doSessionOp runs one login, logout, ack or read.
func doSessionOp(cl *client.Client, rec *recorder, w int, rng *rand.Rand, ss *sessions, key string) {
	user := userName(rng.IntN(sessionUsers))
	dev := sessionDevices[rng.IntN(len(sessionDevices))]
	switch n := rng.IntN(20); {
	case n < 7:
		session := key
		if s, ok := ss.last[[2]string{user, dev.id}]; ok && rng.IntN(3) == 0 {
			session = s // a reconnect
		}
		op := history.Op{Process: w, Kind: history.Login, Timeline: user, Key: session, Device: dev.id, Class: dev.class}
		var ended []string
		doWrite(rec, op, func(ctx context.Context) (uint64, error) {
			resp, err := cl.Login(ctx, user, dev.id, dev.class, session, nil)
			for _, e := range resp.GetEnded() {
				ended = append(ended, e.GetSessionId())
			}
			return resp.GetSession().GetEpoch(), err
		}, func(op *history.Op) { op.Ended = ended })
		ss.last[[2]string{user, dev.id}] = session
		ss.made = append(ss.made, op)
	case n < 9:
		if len(ss.made) == 0 {
			return
		}
		l := ss.made[rng.IntN(len(ss.made))]
		op := history.Op{Process: w, Kind: history.Logout, Timeline: l.Timeline, Key: l.Key, Device: l.Device}
		doWrite(rec, op, func(ctx context.Context) (uint64, error) {
			_, err := cl.Logout(ctx, l.Timeline, l.Key)
			return 0, err
		})
	case n < 14:
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		head, err := cl.Head(ctx, user, client.Linearizable)
		cancel()
		if err != nil {
			return
		}
		seq := head - min(head, uint64(rng.IntN(4)))
		op := history.Op{Process: w, Kind: history.Ack, Timeline: user, Device: dev.id, After: seq}
		var session string
		doWrite(rec, op, func(ctx context.Context) (uint64, error) {
			resp, err := cl.Ack(ctx, user, dev.id, user, seq)
			session = resp.GetSessionId()
			return resp.GetSeq(), err
		}, func(op *history.Op) { op.Session = session })
	default:
		c := rng.IntN(conversations)
		ms := members(c)
		user = ms[rng.IntN(len(ms))]
		conv := conversationName(c)
		known := rec.knownSeq(conv)
		seq := known - min(known, uint64(rng.IntN(5))) + uint64(rng.IntN(2)) // sometimes past what is delivered
		op := history.Op{Process: w, Kind: history.MarkRead, Timeline: user, Conversation: conv, After: seq}
		doWrite(rec, op, func(ctx context.Context) (uint64, error) {
			resp, err := cl.MarkRead(ctx, user, conv, seq)
			return resp.GetConversation().GetReadSeq(), err
		})
	}
}

// readUsers reads every user's sessions, session events and conversation
// list from every replica of the user's group (stale reads of the settled
// replicas).
func readUsers(ctx context.Context, perNode map[string]*client.Client, replicasOf func(string) []string) (map[string]map[string]history.UserState, error) {
	out := map[string]map[string]history.UserState{}
	for i := range users {
		user := userName(i)
		for _, node := range replicasOf(user) {
			cl := perNode[node]
			var u history.UserState
			devs, err := cl.ListDevices(ctx, user, client.Stale)
			if err != nil {
				return out, fmt.Errorf("devices of %s on %s: %w", user, node, err)
			}
			for _, a := range devs.GetActive() {
				s := a.GetSession()
				u.Active = append(u.Active, history.SessionState{Session: s.GetSessionId(), Device: s.GetDeviceId(), Class: s.GetDeviceClass()})
			}
			for _, s := range devs.GetEnded() {
				u.Ended = append(u.Ended, history.SessionState{Session: s.GetSessionId(), Device: s.GetDeviceId(), Class: s.GetDeviceClass(), Reason: s.GetEndReason(), EndedBy: s.GetEndedBy()})
			}
			for after := uint64(0); ; {
				page, err := cl.Pull(ctx, shard.DeviceEventsTimeline(user), after, 1000, client.Stale)
				if err != nil {
					return out, fmt.Errorf("device events of %s on %s: %w", user, node, err)
				}
				for _, e := range page.GetEntries() {
					md := e.GetMetadata()
					u.Events = append(u.Events, history.SessionState{Session: md["session_id"], Device: md["device_id"],
						Class: md["device_class"], Reason: md["reason"], EndedBy: md["ended_by"]})
					after = e.GetSeq()
				}
				if page.GetStatus() != syncv1.PullStatus_PULL_STATUS_MORE {
					break
				}
			}
			for after := ""; ; {
				page, err := cl.Conversations(ctx, user, after, 1000, client.Stale)
				if err != nil {
					return out, fmt.Errorf("conversations of %s on %s: %w", user, node, err)
				}
				for _, c := range page.GetConversations() {
					u.Conversations = append(u.Conversations, conversationState(c))
				}
				if !page.GetMore() {
					break
				}
				after = page.GetNextAfterKey()
			}
			if out[node] == nil {
				out[node] = map[string]history.UserState{}
			}
			out[node][user] = u
		}
	}
	return out, nil
}

func conversationState(c *syncv1.ConversationSummary) history.ConversationState {
	return history.ConversationState{Conversation: c.GetConversation(), LastSeq: c.GetLastSeq(), LastSender: c.GetLastSender(), Unread: c.GetUnread(), ReadSeq: c.GetReadSeq()}
}
