package client

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

const (
	// catchUpPage is the Pull page size of a catch-up (the server's maximum).
	catchUpPage = 1000
	// maxCatchUps bounds the Pulls (or Heads) in flight, and so the pages
	// held in memory at once.
	maxCatchUps = 8
	// Re-adding a timeline that keeps failing (Moved again, stream down)
	// waits from subMinBackoff, doubling, to subMaxBackoff; the backoff is
	// forgotten after backoffMemory without a failure.
	subMinBackoff = 50 * time.Millisecond
	subMaxBackoff = 2 * time.Second
	backoffMemory = 10 * time.Second
	// idleGrace keeps a stream that follows nothing open for a while, as a
	// timeline that left it for a catch-up is likely to come back.
	idleGrace = time.Second
)

// phase is where a followed timeline stands.
type phase int

const (
	attached   phase = iota // added on a stream
	toAdd                   // to be added to a stream when due
	toCatchUp               // to be pulled up to date when due, then added
	catchingUp              // a Pull or Head is in flight
)

// follow is the loop's state of one timeline.
type follow struct {
	last     uint64 // the last seq delivered (entry mode) or head (notify mode)
	gen      uint64 // bumped by each Add, so an older catch-up's answer is ignored
	phase    phase
	on       *stream // when attached
	hint     string  // where to add it next (a Moved's leader); "" for the shard map
	due      time.Time
	backoff  time.Duration
	failedAt time.Time
}

// catchUp is the answer of a Pull (entry mode) or a Head (notify mode).
type catchUp struct {
	timeline string
	gen      uint64
	resp     *syncv1.PullResponse
	head     uint64
	err      error
}

// loop owns all the state of a Subscription, in one goroutine: what each
// timeline has had delivered, which stream follows it, and what is to be
// done about it next.
type loop struct {
	s        *Subscription
	c        *Client
	ctx      context.Context
	follows  map[string]*follow
	streams  map[string]*stream  // by node address
	pending  map[string]struct{} // follows in toAdd or toCatchUp
	dirty    bool                // pending or streams changed: pump
	pulls    int                 // catch-ups in flight
	in       chan streamMsg
	caught   chan catchUp
	wake     *time.Timer
	gen      uint64
	fetching bool          // a shard map fetch is under way
	fetched  chan struct{} // it ended
	// With FailFast: the nodes whose streams could not connect since a node
	// last answered, and why.
	refused map[string]string
}

func newLoop(s *Subscription) *loop {
	wake := time.NewTimer(time.Hour)
	wake.Stop()
	return &loop{
		s:       s,
		c:       s.c,
		ctx:     s.ctx,
		follows: map[string]*follow{},
		streams: map[string]*stream{},
		pending: map[string]struct{}{},
		in:      make(chan streamMsg),
		caught:  make(chan catchUp),
		wake:    wake,
		fetched: make(chan struct{}),
		refused: map[string]string{},
	}
}

// allRefused says whether every address a followed timeline can go to
// refused its stream.
func (l *loop) allRefused() bool {
	for tl := range l.follows {
		if !l.c.allRefused(tl, l.refused) {
			return false
		}
	}
	return len(l.follows) > 0
}

func (l *loop) run() {
	defer l.s.wg.Done()
	defer close(l.s.events)
	defer l.wake.Stop()
	// Streams end with the subscription's context: their goroutines, and
	// those of catch-ups, return on their own (Close waits for them).
	for {
		select {
		case <-l.ctx.Done():
			return
		case m := <-l.in:
			if m.err != nil {
				l.ended(m.st, m.err)
			} else {
				l.event(m.st, m.ev)
			}
		case r := <-l.caught:
			l.caughtUp(r)
		case <-l.s.kick:
			l.commands()
		case <-l.fetched:
			l.fetching, l.dirty = false, true
		case <-l.wake.C:
			l.dirty = true
		}
		if l.ctx.Err() != nil {
			return
		}
		if l.dirty {
			l.pump()
		}
	}
}

// commands applies Adds and Removes.
func (l *loop) commands() {
	for tl, cmd := range l.s.takeCommands() {
		f := l.follows[tl]
		if f != nil {
			l.detach(tl, f, true)
			delete(l.pending, tl)
		}
		if !cmd.add {
			delete(l.follows, tl)
			continue
		}
		if f == nil {
			f = &follow{}
			l.follows[tl] = f
		}
		l.gen++
		f.last, f.gen, f.hint, f.backoff = cmd.after, l.gen, "", 0
		l.schedule(tl, f, toAdd, false)
	}
}

// event handles one event of stream st. Events about a timeline st does
// not follow (any more) are stale, from before a remove, a Moved or a Gap.
func (l *loop) event(st *stream, ev *syncv1.SubscribeEvent) {
	if len(l.refused) > 0 {
		clear(l.refused) // a node answered
	}
	tl := eventTimeline(ev)
	f := l.follows[tl]
	if f == nil || f.on != st {
		return
	}
	switch {
	case ev.GetEntry() != nil:
		e := ev.GetEntry()
		switch seq := e.GetSeq(); {
		case seq <= f.last: // a duplicate, after a re-add
		case seq == f.last+1:
			f.backoff = 0
			if l.deliver(Event{Timeline: tl, Entry: e}) {
				f.last = seq
			}
		default: // a hole: stop the stream for it and fill it with Pull
			l.detach(tl, f, true)
			l.schedule(tl, f, toCatchUp, false)
		}
	case ev.GetNotification() != nil:
		f.backoff = 0
		if head := ev.GetNotification().GetHeadSeq(); head > f.last {
			if l.deliver(Event{Timeline: tl, Head: head}) {
				f.last = head
			}
		}
	case ev.GetGap() != nil: // the server dropped it
		l.detach(tl, f, false)
		l.schedule(tl, f, toCatchUp, false)
	case ev.GetMoved() != nil: // the server dropped it
		l.detach(tl, f, false)
		l.c.moved(tl, st.addr, ev.GetMoved())
		f.hint = ev.GetMoved().GetLeaderAddr()
		l.schedule(tl, f, toAdd, true)
		if f.hint == "" && f.backoff >= subMaxBackoff {
			l.c.forgetRoutes() // Moved again and again, no leader named: maybe the map is wrong
		}
	case ev.GetReset_() != nil:
		// A Reset at or below last+1 lost nothing this subscriber lacks
		// (it is stale, from before a re-add).
		if oldest := ev.GetReset_().GetOldestSeq(); oldest > f.last+1 {
			if l.deliver(Event{Timeline: tl, Reset: true, OldestSeq: oldest}) {
				f.last = oldest - 1
			}
		}
	}
}

func eventTimeline(ev *syncv1.SubscribeEvent) string {
	switch {
	case ev.GetEntry() != nil:
		return ev.GetEntry().GetTimeline()
	case ev.GetNotification() != nil:
		return ev.GetNotification().GetTimeline()
	case ev.GetGap() != nil:
		return ev.GetGap().GetTimeline()
	case ev.GetMoved() != nil:
		return ev.GetMoved().GetTimeline()
	case ev.GetReset_() != nil:
		return ev.GetReset_().GetTimeline()
	}
	return ""
}

// ended handles the end of stream st: its timelines are added again
// elsewhere (or at the same node, when it comes back) from where they are.
func (l *loop) ended(st *stream, err error) {
	if l.streams[st.addr] != st {
		return // closed on purpose, or already handled
	}
	delete(l.streams, st.addr)
	l.dirty = true
	if fatal(err) {
		l.s.cancel(err) // it says which node and stream already
		return
	}
	if cause, ok := l.c.unreachable(st.addr, err); ok && l.c.opts.FailFast {
		l.refused[st.addr] = cause
		if l.allRefused() {
			l.s.cancel(unreachableError(l.refused))
			return
		}
	}
	l.c.nodeFailed(st.addr)
	for tl := range st.timelines {
		f := l.follows[tl]
		if f == nil || f.on != st {
			continue // cannot be: detach keeps st.timelines in step
		}
		f.on = nil
		l.schedule(tl, f, toAdd, true)
	}
}

// fatal tells a caller error, which retrying would repeat, from a failure.
// (Not Canceled: a node shutting down may answer it.)
func fatal(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.ResourceExhausted, codes.Unimplemented,
		codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// detach takes tl off its stream, telling the server when it still follows
// it there.
func (l *loop) detach(tl string, f *follow, tellServer bool) {
	if f.on == nil {
		return
	}
	if tellServer {
		f.on.queueRemove(tl)
	}
	delete(f.on.timelines, tl)
	f.on = nil
	l.dirty = true
}

// schedule puts tl in phase p, due now or, after a failure, after its
// backoff.
func (l *loop) schedule(tl string, f *follow, p phase, failed bool) {
	now := time.Now()
	f.phase, f.due = p, now
	if failed {
		if now.Sub(f.failedAt) > backoffMemory {
			f.backoff = 0
		}
		f.failedAt = now
		f.due = now.Add(f.backoff)
		f.backoff = min(max(2*f.backoff, subMinBackoff), subMaxBackoff)
	}
	l.pending[tl] = struct{}{}
	l.dirty = true
}

// pump does what is due: adds, catch-ups (as many as may run), closing
// streams idle for idleGrace; then it sets the timer for what is next.
func (l *loop) pump() {
	l.dirty = false
	now := time.Now()
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for tl := range l.pending {
		f := l.follows[tl]
		if !f.due.After(now) {
			switch {
			case f.phase == toAdd:
				l.attach(tl, f)
			case f.phase == toCatchUp && l.pulls < maxCatchUps:
				l.startCatchUp(tl, f)
			}
		}
		// What is due but still pending (a catch-up without a slot, an add
		// waiting for the shard map) is pumped again when a catch-up or the
		// fetch ends; only the rest needs the timer.
		if _, ok := l.pending[tl]; ok && f.due.After(now) {
			later(f.due)
		}
	}
	for addr, st := range l.streams {
		switch {
		case len(st.timelines) > 0:
			st.idleSince = time.Time{}
		case st.idleSince.IsZero():
			st.idleSince = now
			later(now.Add(idleGrace))
		case now.Sub(st.idleSince) >= idleGrace:
			delete(l.streams, addr)
			st.cancel(errClosed)
		default:
			later(st.idleSince.Add(idleGrace))
		}
	}
	l.wake.Stop()
	if !next.IsZero() {
		l.wake.Reset(time.Until(next))
	}
}

// attach adds tl to the stream of the node its Moved hint named, else of
// the node the client believes leads its group.
func (l *loop) attach(tl string, f *follow) {
	addr := f.hint
	f.hint = ""
	if addr == "" {
		if l.needRoutes() {
			return // pumped again when the fetch ends
		}
		var err error
		if addr, _, _, err = l.c.target(tl); err != nil {
			l.schedule(tl, f, toAdd, true)
			return
		}
	}
	st := l.streams[addr]
	if st == nil {
		if st = l.open(addr); st == nil {
			l.schedule(tl, f, toAdd, true)
			return
		}
	}
	st.timelines[tl] = struct{}{}
	st.queueAdd(tl, f.last)
	f.on, f.phase = st, attached
	delete(l.pending, tl)
}

// open starts a stream to addr.
func (l *loop) open(addr string) *stream {
	conn, err := l.c.connTo(addr)
	if err != nil {
		return nil
	}
	st := newStream(l.ctx, addr)
	l.streams[addr] = st
	l.s.wg.Add(1)
	go st.run(&l.s.wg, conn, l.s.opts.NotifyOnly, l.s.opts.StreamSilence, l.in)
	return st
}

// needRoutes tells attach to wait for the shard map: the client has none
// and a fetch is (now) under way in the background, so that the loop never
// waits on the network. Right after a failed fetch it does not wait: adds go
// where target says, and Moved puts them right.
func (l *loop) needRoutes() bool {
	switch {
	case l.c.hasRoutes():
		return false
	case l.fetching:
		return true
	case !l.c.routesDue():
		return false
	}
	l.fetching = true
	l.s.wg.Add(1)
	go func() {
		defer l.s.wg.Done()
		l.c.fetchRoutes(l.ctx)
		select {
		case l.fetched <- struct{}{}:
		case <-l.ctx.Done():
		}
	}()
	return true
}

// startCatchUp reads what tl missed: a page of Pull after last, or (notify
// mode) the head. One attempt is bounded, so that an unreachable group
// holds a slot for a while only, and is tried again after a backoff.
func (l *loop) startCatchUp(tl string, f *follow) {
	f.phase = catchingUp
	delete(l.pending, tl)
	l.pulls++
	r := catchUp{timeline: tl, gen: f.gen}
	after, notify := f.last, l.s.opts.NotifyOnly
	timeout := 2 * l.c.opts.AttemptTimeout
	l.s.wg.Add(1)
	go func() {
		defer l.s.wg.Done()
		ctx, cancel := context.WithTimeout(l.ctx, timeout)
		defer cancel()
		if notify {
			r.head, r.err = l.c.Head(ctx, tl, Linearizable)
		} else {
			r.resp, r.err = l.c.Pull(ctx, tl, after, catchUpPage, Linearizable)
		}
		select {
		case l.caught <- r:
		case <-l.ctx.Done():
		}
	}()
}

// caughtUp delivers what a catch-up read, then pulls again while it makes
// progress and the timeline is behind its head, else adds it to a stream.
func (l *loop) caughtUp(r catchUp) {
	l.pulls--
	l.dirty = true // a slot is free
	f := l.follows[r.timeline]
	if f == nil || f.gen != r.gen || f.phase != catchingUp {
		return // removed or added again meanwhile
	}
	if r.err != nil {
		// With FailFast, an unreachable error says the catch-up found every
		// address refused.
		if l.ctx.Err() == nil && (fatal(r.err) || l.c.failedFast(r.err)) {
			l.s.cancel(fmt.Errorf("client: subscribe: catching up %q: %w", r.timeline, typed(r.err)))
			return
		}
		l.schedule(r.timeline, f, toCatchUp, true)
		return
	}
	if len(l.refused) > 0 {
		clear(l.refused) // a node answered
	}
	if l.s.opts.NotifyOnly {
		if r.head > f.last && l.deliver(Event{Timeline: r.timeline, Head: r.head}) {
			f.last = r.head
		}
		l.schedule(r.timeline, f, toAdd, false)
		return
	}
	start := f.last
	resp := r.resp
	if resp.GetStatus() == syncv1.PullStatus_PULL_STATUS_RESET {
		if oldest := resp.GetOldestSeq(); oldest > f.last+1 {
			if !l.deliver(Event{Timeline: r.timeline, Reset: true, OldestSeq: oldest}) {
				return
			}
			f.last = oldest - 1
		}
	}
	for _, e := range resp.GetEntries() {
		if e.GetSeq() <= f.last {
			continue
		}
		if e.GetSeq() != f.last+1 || !l.deliver(Event{Timeline: r.timeline, Entry: e}) {
			break // a hole (trimmed meanwhile?): the next Pull tells
		}
		f.last = e.GetSeq()
	}
	switch {
	case f.last >= resp.GetHeadSeq() || resp.GetStatus() == syncv1.PullStatus_PULL_STATUS_AHEAD:
		l.schedule(r.timeline, f, toAdd, false)
	case f.last > start:
		l.schedule(r.timeline, f, toCatchUp, false)
	default: // no progress: do not spin
		l.schedule(r.timeline, f, toCatchUp, true)
	}
}

// deliver hands ev to the consumer, waiting while Events is full: that wait
// is the backpressure that stops the streams.
func (l *loop) deliver(ev Event) bool {
	select {
	case l.s.events <- ev:
		return true
	case <-l.ctx.Done():
		return false
	}
}
