package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/node/hub"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// StreamLimits bound what one Subscribe stream may hold on the server.
type StreamLimits struct {
	// MaxTimelines a stream may follow at once.
	MaxTimelines int
	// BufferEvents and BufferBytes bound the events queued for sending. A
	// timeline more than BufferEvents entries behind its head is dropped
	// with a Gap (the subscriber catches up with Pull): server memory per
	// stream stays bounded however slowly the subscriber reads.
	BufferEvents int
	BufferBytes  int
	// Heartbeat is how long a stream may stay silent before a Heartbeat.
	Heartbeat time.Duration
	// HealthEvery is how often the stream checks that this node still
	// serves its timelines (Moved otherwise).
	HealthEvery time.Duration
}

// DefaultStreamLimits are the limits New uses.
func DefaultStreamLimits() StreamLimits {
	return StreamLimits{
		MaxTimelines: 10000,
		BufferEvents: 1024,
		BufferBytes:  8 << 20,
		Heartbeat:    time.Second,
		HealthEvery:  time.Second,
	}
}

// subscribePage is how many entries of one timeline are read per turn, so
// one busy timeline does not hold up the others.
const subscribePage = 100

// Subscribe serves one subscriber stream (see the Sync service).
func (s *Server) Subscribe(stream syncv1.Sync_SubscribeServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	st := &subStream{
		s:       s,
		ctx:     ctx,
		lim:     s.streamLimits,
		w:       s.node.Watch(),
		cursor:  map[string]uint64{},
		pending: map[string]bool{},
		ccursor: map[string]uint64{},
		cpend:   map[string]bool{},
		q:       newOutQueue(s.streamLimits, s.metrics),
	}
	defer st.w.Close()
	defer st.q.drop()

	reqs := make(chan *syncv1.SubscribeRequest)
	recvErr := make(chan error, 1)
	sendErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // before Wait: it ends the sender
	wg.Go(func() { sendErr <- st.q.sendLoop(ctx, stream, st.lim.Heartbeat) })
	// The receiver is not waited for: stream.Recv returns only once this
	// handler has returned (or the client went away), when gRPC ends the
	// stream; waiting here would hold the handler, and a graceful stop,
	// until the client gave up. Its channels never block it after that.
	go func() { recvErr <- recvLoop(ctx, stream, reqs) }()

	health := time.NewTicker(st.lim.HealthEvery)
	defer health.Stop()
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "server: shutting down; subscribe elsewhere")
		case err := <-recvErr:
			if !errors.Is(err, io.EOF) {
				return err
			}
			recvErr = nil // the subscriber sends no more changes; keep streaming
		case err := <-sendErr:
			return err
		case req := <-reqs:
			if err := st.apply(req); err != nil {
				return err
			}
		case <-st.w.Wake():
			for _, name := range st.w.Take() { // timelines and collections share the hub
				if _, ok := st.cursor[name]; ok {
					st.pending[name] = true
				}
				if _, ok := st.ccursor[name]; ok {
					st.cpend[name] = true
				}
			}
		case <-st.q.space:
		case <-health.C:
			st.checkServing()
		}
		st.produce()
		st.produceCollections()
	}
}

func recvLoop(ctx context.Context, stream syncv1.Sync_SubscribeServer, reqs chan<- *syncv1.SubscribeRequest) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		select {
		case reqs <- req:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// subStream is one stream's state, owned by the Subscribe goroutine.
type subStream struct {
	s          *Server
	ctx        context.Context
	lim        StreamLimits
	w          *hub.Watcher
	notifyOnly bool
	started    bool
	// cursor is, per followed timeline, the last seq queued for sending.
	cursor map[string]uint64
	// pending timelines may have entries past their cursor.
	pending map[string]bool
	// ccursor is, per followed collection, the last version queued; cpend
	// collections may have changes past it (collections.go).
	ccursor map[string]uint64
	cpend   map[string]bool
	q       *outQueue
}

// apply adds and removes timelines. Bad input ends the stream with
// INVALID_ARGUMENT or RESOURCE_EXHAUSTED before anything changes.
func (st *subStream) apply(req *syncv1.SubscribeRequest) error {
	if !st.started {
		st.started, st.notifyOnly = true, req.GetNotifyOnly()
	}
	adding := 0
	for i, a := range req.GetAdd() {
		if err := fsm.ValidateTimelineID(a.GetTimeline()); err != nil {
			return status.Errorf(codes.InvalidArgument, "add %d: %v", i, err)
		}
		if _, ok := st.cursor[a.GetTimeline()]; !ok {
			adding++
		}
	}
	removing := 0
	for i, tl := range req.GetRemove() {
		if err := fsm.ValidateTimelineID(tl); err != nil {
			return status.Errorf(codes.InvalidArgument, "remove %d: %v", i, err)
		}
		if _, ok := st.cursor[tl]; ok {
			removing++ // removing a timeline not followed is a no-op
		}
	}
	cadding, cremoving, err := st.checkCollections(req)
	if err != nil {
		return err
	}
	if n := len(st.cursor) + len(st.ccursor) + adding - removing + cadding - cremoving; n > st.lim.MaxTimelines {
		return status.Errorf(codes.ResourceExhausted, "a stream follows at most %d timelines and collections; this request would make %d", st.lim.MaxTimelines, n)
	}
	st.applyCollections(req)
	for _, tl := range req.GetRemove() {
		st.drop(tl)
	}
	for _, a := range req.GetAdd() {
		tl := a.GetTimeline()
		if group, leader, ok := st.s.node.Serving(tl); !ok {
			st.moved(tl, group, leader)
			continue
		}
		st.cursor[tl] = a.GetAfterSeq()
		st.pending[tl] = true
		st.w.Add(tl)
	}
	return nil
}

// produce queues what the pending timelines have past their cursors, while
// the queue has room. What does not fit stays pending: nothing is buffered
// beyond the queue, the state machine is the buffer.
func (st *subStream) produce() {
	n := st.s.node
	for tl := range st.pending {
		free := st.q.free()
		if free == 0 {
			return
		}
		after := st.cursor[tl]
		if st.notifyOnly {
			head, err := n.Head(st.ctx, tl, node.Stale)
			if err != nil {
				st.lost(tl, err)
				continue
			}
			if head > after {
				st.q.push(&syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Notification{Notification: &syncv1.Notification{Timeline: tl, HeadSeq: head}}}, 0)
				st.cursor[tl] = head
			}
			delete(st.pending, tl)
			continue
		}
		page, err := n.Pull(st.ctx, tl, after, min(subscribePage, free), node.Stale)
		if err != nil {
			st.lost(tl, err)
			continue
		}
		switch page.Status {
		case fsm.PullUpToDate, fsm.PullAhead:
			// Ahead: this replica lags what the subscriber holds; the watcher
			// marks the timeline again as it catches up.
			delete(st.pending, tl)
		case fsm.PullReset:
			st.q.pushControl(&syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Reset_{Reset_: &syncv1.Reset{Timeline: tl, OldestSeq: page.Oldest}}})
			st.cursor[tl] = page.Oldest - 1
		default:
			if page.Head-after > uint64(st.lim.BufferEvents) {
				st.gap(tl, after+1)
				continue
			}
			for _, e := range page.Entries {
				st.q.push(&syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Entry{Entry: entryProto(e)}}, len(e.Payload))
				st.cursor[tl] = e.Seq
			}
			if page.Status == fsm.PullOK {
				delete(st.pending, tl)
			}
		}
	}
}

// checkServing sends Moved for timelines, and drops collections, this
// node no longer serves.
func (st *subStream) checkServing() {
	for tl := range st.cursor {
		if group, leader, ok := st.s.node.Serving(tl); !ok {
			st.moved(tl, group, leader)
		}
	}
	for coll := range st.ccursor {
		if group, leader, ok := st.s.node.Serving(coll); !ok {
			st.dropCollection(coll, "moved", group, leader)
		}
	}
}

// lost handles a failed local read: the replica went away or cannot serve.
func (st *subStream) lost(tl string, err error) {
	group, leader, _ := st.s.node.Serving(tl)
	st.s.log.Debug("subscription moved", "timeline", tl, "err", err)
	st.moved(tl, group, leader)
}

func (st *subStream) moved(tl string, group shard.GroupID, leaderAddr string) {
	st.drop(tl)
	st.q.pushControl(&syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Moved{Moved: &syncv1.Moved{Timeline: tl, GroupId: uint64(group), LeaderAddr: leaderAddr}}})
}

func (st *subStream) gap(tl string, from uint64) {
	st.drop(tl)
	st.s.metrics.gaps.Inc()
	st.q.pushControl(&syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Gap{Gap: &syncv1.Gap{Timeline: tl, FromSeq: from}}})
}

func (st *subStream) drop(tl string) {
	delete(st.cursor, tl)
	delete(st.pending, tl)
	if _, coll := st.ccursor[tl]; !coll { // a collection of the same name still needs the hub
		st.w.Remove(tl)
	}
}

// outQueue holds a stream's events, in order, until its sender goroutine
// sends them. Entries count against the limits; control events (Gap, Moved,
// Reset: a few per followed timeline at most) do not, so dropping a
// timeline never waits for room, yet it follows the entries queued before
// it.
type outQueue struct {
	lim     StreamLimits
	metrics *serverMetrics
	ready   chan struct{} // wakes the sender
	space   chan struct{} // wakes the producer

	mu      sync.Mutex
	items   []queued
	entries int // queued events that count against the limits
	bytes   int
}

type queued struct {
	ev   *syncv1.SubscribeEvent
	size int // 0 for a control event
}

func newOutQueue(lim StreamLimits, m *serverMetrics) *outQueue {
	return &outQueue{lim: lim, metrics: m, ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// free is how many more entries may be queued now.
func (q *outQueue) free() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.bytes >= q.lim.BufferBytes {
		return 0
	}
	return max(0, q.lim.BufferEvents-q.entries)
}

// push queues an entry or a notification.
func (q *outQueue) push(ev *syncv1.SubscribeEvent, payloadBytes int) {
	size := payloadBytes + 64 // ids and seqs, roughly
	q.mu.Lock()
	q.items = append(q.items, queued{ev, size})
	q.entries++
	q.bytes += size
	q.mu.Unlock()
	q.metrics.queued.Add(int64(size))
	signal(q.ready)
}

func (q *outQueue) pushControl(ev *syncv1.SubscribeEvent) {
	q.mu.Lock()
	q.items = append(q.items, queued{ev, 0})
	q.mu.Unlock()
	signal(q.ready)
}

func (q *outQueue) pop() *syncv1.SubscribeEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil
	}
	it := q.items[0]
	q.items[0] = queued{}
	q.items = q.items[1:]
	if it.size > 0 {
		q.entries--
		q.bytes -= it.size
		q.metrics.queued.Add(-int64(it.size))
		signal(q.space)
	}
	return it.ev
}

// drop empties the queue (the stream ended).
func (q *outQueue) drop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.metrics.queued.Add(-int64(q.bytes))
	q.items, q.entries, q.bytes = nil, 0, 0
}

// sendLoop sends queued events in order, and a Heartbeat after heartbeat of
// silence, until ctx ends or a send fails.
func (q *outQueue) sendLoop(ctx context.Context, stream syncv1.Sync_SubscribeServer, heartbeat time.Duration) error {
	beat := time.NewTimer(heartbeat)
	defer beat.Stop()
	hb := &syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Heartbeat{Heartbeat: &syncv1.Heartbeat{}}}
	for {
		ev := q.pop()
		if ev == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-q.ready:
				continue
			case <-beat.C:
				ev = hb
			}
		}
		if err := stream.Send(ev); err != nil {
			return fmt.Errorf("subscribe: send: %w", err)
		}
		beat.Reset(heartbeat)
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
