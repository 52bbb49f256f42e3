package node

import (
	"errors"
	"sync"

	"github.com/syncstore/syncstore/shard"
)

// hub tells watchers which of their timelines got new entries on this node.
// The state machines publish after each applied batch, on their apply
// goroutines, so publishing never blocks: a watcher only records the
// timeline as dirty and is woken through a one-slot channel.
type hub struct {
	mu         sync.RWMutex
	byTimeline map[string]map[*Watcher]struct{}
}

func newHub() *hub {
	return &hub{byTimeline: map[string]map[*Watcher]struct{}{}}
}

// publish marks each timeline dirty for its watchers.
func (h *hub) publish(heads map[string]uint64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for tl := range heads {
		for w := range h.byTimeline[tl] {
			w.mark(tl)
		}
	}
}

// publishAll marks every watched timeline dirty (a replica's state was
// replaced by a snapshot: any head may have moved).
func (h *hub) publishAll() {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for tl, ws := range h.byTimeline {
		for w := range ws {
			w.mark(tl)
		}
	}
}

// Watcher follows a set of timelines on this node. It holds no entries,
// only the names of timelines that changed since Take, so its memory is
// bounded by the timelines it follows however fast they grow.
type Watcher struct {
	hub  *hub
	wake chan struct{}

	mu        sync.Mutex
	timelines map[string]bool
	dirty     map[string]bool
}

// Watch returns a watcher following no timeline yet; Close it when done.
func (n *Node) Watch() *Watcher {
	return &Watcher{hub: n.hub, wake: make(chan struct{}, 1), timelines: map[string]bool{}, dirty: map[string]bool{}}
}

// Add follows timelines; each starts dirty, so the owner looks at it once.
func (w *Watcher) Add(timelines ...string) {
	w.hub.mu.Lock()
	for _, tl := range timelines {
		ws := w.hub.byTimeline[tl]
		if ws == nil {
			ws = map[*Watcher]struct{}{}
			w.hub.byTimeline[tl] = ws
		}
		ws[w] = struct{}{}
	}
	w.hub.mu.Unlock()
	w.mu.Lock()
	for _, tl := range timelines {
		w.timelines[tl] = true
	}
	w.mu.Unlock()
	for _, tl := range timelines {
		w.mark(tl)
	}
}

// Remove stops following timelines.
func (w *Watcher) Remove(timelines ...string) {
	w.hub.mu.Lock()
	for _, tl := range timelines {
		if ws := w.hub.byTimeline[tl]; ws != nil {
			delete(ws, w)
			if len(ws) == 0 {
				delete(w.hub.byTimeline, tl)
			}
		}
	}
	w.hub.mu.Unlock()
	w.mu.Lock()
	for _, tl := range timelines {
		delete(w.timelines, tl)
		delete(w.dirty, tl)
	}
	w.mu.Unlock()
}

// Wake receives a value when timelines became dirty since the last Take.
func (w *Watcher) Wake() <-chan struct{} { return w.wake }

// Take returns the dirty timelines and clears them.
func (w *Watcher) Take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.dirty))
	for tl := range w.dirty {
		out = append(out, tl)
	}
	clear(w.dirty)
	return out
}

// Close stops following everything.
func (w *Watcher) Close() {
	w.mu.Lock()
	tls := make([]string, 0, len(w.timelines))
	for tl := range w.timelines {
		tls = append(tls, tl)
	}
	w.mu.Unlock()
	w.Remove(tls...)
}

func (w *Watcher) mark(tl string) {
	w.mu.Lock()
	if w.timelines[tl] {
		w.dirty[tl] = true
	}
	w.mu.Unlock()
	w.wakeUp()
}

func (w *Watcher) wakeUp() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Serving says whether this node should stream a timeline's new entries:
// it leads the timeline's group. A follower would work too (what it applies
// is committed) but learns of each commit only with the leader's next
// heartbeat, up to a tenth of the heartbeat timeout later; a deposed leader
// cut off from its group steps down within the leader lease, so its
// subscribers are sent on. When it should not, leaderAddr is where to go, if
// known.
func (n *Node) Serving(timeline string) (group shard.GroupID, leaderAddr string, ok bool) {
	m := n.shardMap()
	if m == nil {
		return 0, "", false
	}
	group = m.GroupFor(timeline)
	g := n.Group(group)
	if g == nil {
		var nl *NotLeaderError
		if errors.As(n.notHosted(group), &nl) {
			leaderAddr = nl.LeaderGRPCAddr
		}
		return group, leaderAddr, false
	}
	if g.IsLeader() {
		return group, "", true
	}
	_, leaderAddr = g.Leader()
	return group, leaderAddr, false
}
