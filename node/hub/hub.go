// Package hub tells a node's watchers (Subscribe streams) which of their
// timelines got new entries. State machines publish after each applied
// batch on their apply goroutines, so publishing never blocks: a watcher
// only records the timeline as dirty and is woken through a one-slot
// channel, and its owner reads the entries from the store (push is an
// optimisation, pull the guarantee).
package hub

import "sync"

// Hub is a node's set of watchers, by timeline.
type Hub struct {
	mu         sync.RWMutex
	byTimeline map[string]map[*Watcher]struct{}
}

// New returns a hub with no watchers.
func New() *Hub {
	return &Hub{byTimeline: map[string]map[*Watcher]struct{}{}}
}

// Publish marks each timeline dirty for its watchers.
func (h *Hub) Publish(heads map[string]uint64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for tl := range heads {
		for w := range h.byTimeline[tl] {
			w.mark(tl)
		}
	}
}

// PublishAll marks every watched timeline dirty (a replica's state was
// replaced by a snapshot: any head may have moved).
func (h *Hub) PublishAll() {
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
	hub  *Hub
	wake chan struct{}

	mu        sync.Mutex
	timelines map[string]bool
	dirty     map[string]bool
}

// Watch returns a watcher following no timeline yet; Close it when done.
func (h *Hub) Watch() *Watcher {
	return &Watcher{hub: h, wake: make(chan struct{}, 1), timelines: map[string]bool{}, dirty: map[string]bool{}}
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
