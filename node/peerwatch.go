package node

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm"
)

// peerWatch follows which peers this node cannot reach, from two sources:
// the groups it leads (hashicorp/raft reports every failed heartbeat to a
// follower, and the first one that succeeds again, to an observer) and
// gossip (a peer memberlist declared dead, or that left). A node that
// leads nothing shared with a peer only learns from gossip.
//
// checkPeers turns that into one line when a peer becomes unreachable and
// one when it is back: Raft's own lines say it once per failed heartbeat
// of each group (logbridge bounds them), never "n3 is down".
type peerWatch struct {
	mu sync.Mutex
	// failing: group replica -> peer -> the followers whose heartbeats
	// fail since their last success. Keyed by replica, not group id: a
	// rebuilt replica has a Raft of its own.
	failing map[*Group]map[string]heartbeatFailure

	// Touched by checkPeers only (the gossip goroutine).
	observed map[*Group]*raft.Observer
	down     map[string]peerDown
}

type heartbeatFailure struct {
	since time.Time // last contact, or the first failure when never reached
	first time.Time // first failure since the last success
}

// peerDown is a peer this node has reported unreachable.
type peerDown struct {
	since time.Time
}

func newPeerWatch() *peerWatch {
	return &peerWatch{
		failing:  map[*Group]map[string]heartbeatFailure{},
		observed: map[*Group]*raft.Observer{},
		down:     map[string]peerDown{},
	}
}

// observer records a group's failed and resumed heartbeats. Raft calls the
// filter synchronously from the heartbeat goroutine; it only updates a map
// and queues nothing (the observer has no channel).
func (w *peerWatch) observer(g *Group) *raft.Observer {
	return raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		switch d := o.Data.(type) {
		case raft.FailedHeartbeatObservation:
			w.heartbeatFailed(g, string(d.PeerID), d.LastContact, time.Now())
		case raft.ResumedHeartbeatObservation:
			w.heartbeatResumed(g, string(d.PeerID))
		}
		return false
	})
}

func (w *peerWatch) heartbeatFailed(g *Group, peer string, lastContact, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.failing[g]
	if m == nil {
		m = map[string]heartbeatFailure{}
		w.failing[g] = m
	}
	if _, ok := m[peer]; ok {
		return
	}
	since := lastContact
	if since.IsZero() {
		since = now
	}
	m[peer] = heartbeatFailure{since: since, first: now}
}

func (w *peerWatch) heartbeatResumed(g *Group, peer string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.failing[g], peer)
}

// raftFailure reports whether the heartbeats of replica g to peer fail,
// and since when Raft has not reached it.
func (w *peerWatch) raftFailure(g *Group, peer string) (heartbeatFailure, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, ok := w.failing[g][peer]
	return f, ok
}

// forget drops what a group reported: it is closed, or no longer led here
// (Raft stops heartbeating when it steps down, without a last word).
func (w *peerWatch) forget(g *Group) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.failing, g)
}

// gossipDown reports whether gossip says a node is gone: declared dead,
// or left. Suspect is not enough: this node's own probes of a peer can be
// rounds apart in a larger cluster.
func gossipDown(health string) bool { return health == HealthDead || health == HealthLeft }

// unreachable is what this node knows of one peer being down, "" reason
// when it is not.
type unreachable struct {
	reason string
	since  time.Time
}

// checkPeers logs the peers that became unreachable and those that are
// back. It runs every gossipEvery on the gossip goroutine.
func (n *Node) checkPeers() {
	w := n.peers
	now := time.Now()
	groups := append([]*Group{n.meta}, n.groupsSnapshot()...)
	n.observeGroups(groups)
	health := map[string]string{}
	for _, m := range n.gossip.Members() {
		health[m.ID] = m.Health
	}
	reg, err := n.registry()
	if err != nil {
		return
	}
	for _, nd := range reg {
		if nd.ID == n.cfg.NodeID || nd.State == fsm.NodeRemoved {
			delete(w.down, nd.ID)
			continue
		}
		u := n.peerState(nd.ID, groups, health[nd.ID], now)
		prev, wasDown := w.down[nd.ID]
		switch {
		case u.reason != "" && !wasDown:
			w.down[nd.ID] = peerDown{since: u.since}
			n.log.Warn("peer unreachable", "peer", nd.ID, "since", u.since.Format(time.RFC3339Nano),
				"groups", n.groupsWith(nd.ID, groups), "reason", u.reason)
		case u.reason == "" && wasDown:
			delete(w.down, nd.ID)
			n.log.Info("peer reachable again", "peer", nd.ID, "down_for", now.Sub(prev.since).Round(time.Millisecond),
				"groups", n.groupsWith(nd.ID, groups))
		}
	}
	for id := range w.down {
		if !slices.ContainsFunc(reg, func(nd fsm.Node) bool { return nd.ID == id }) {
			delete(w.down, id) // left the registry
		}
	}
}

// observeGroups registers the peer watch's observer on groups opened since
// the last round and forgets the heartbeats of those closed or not led.
func (n *Node) observeGroups(groups []*Group) {
	w := n.peers
	open := map[*Group]bool{}
	for _, g := range groups {
		open[g] = true
		if w.observed[g] == nil {
			o := w.observer(g)
			g.raft.RegisterObserver(o)
			w.observed[g] = o
		}
		if !g.IsLeader() {
			w.forget(g)
		}
	}
	for g, o := range w.observed {
		if !open[g] {
			g.raft.DeregisterObserver(o)
			delete(w.observed, g)
			w.forget(g)
		}
	}
}

// peerState says whether peer is unreachable now: gossip declared it gone,
// or the heartbeats of a group led here have failed to reach it for at
// least a heartbeat timeout (not one lost heartbeat).
func (n *Node) peerState(peer string, groups []*Group, health string, now time.Time) unreachable {
	var u unreachable
	var why []string
	failing := 0
	for _, g := range groups {
		f, ok := n.peers.raftFailure(g, peer)
		if !ok || now.Sub(f.first) < n.cfg.HeartbeatTimeout {
			continue
		}
		failing++
		if u.since.IsZero() || f.since.Before(u.since) {
			u.since = f.since
		}
	}
	if failing > 0 {
		why = append(why, fmt.Sprintf("raft heartbeats fail in %d group(s) led here", failing))
	}
	if gossipDown(health) {
		why = append(why, "gossip: "+health)
		if prev, ok := n.peers.down[peer]; ok && (u.since.IsZero() || prev.since.Before(u.since)) {
			u.since = prev.since
		} else if u.since.IsZero() {
			u.since = now
		}
	}
	u.reason = strings.Join(why, "; ")
	return u
}

// groupsWith counts the local groups whose configuration holds peer: those
// its absence leaves a replica short.
func (n *Node) groupsWith(peer string, groups []*Group) int {
	count := 0
	for _, g := range groups {
		cf, _, err := g.configuration()
		if err != nil {
			continue
		}
		if slices.ContainsFunc(cf.Servers, func(s raft.Server) bool { return string(s.ID) == peer }) {
			count++
		}
	}
	return count
}
