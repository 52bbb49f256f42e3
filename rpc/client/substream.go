package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// stream is one Subscribe stream to one node. Its goroutines (run, which
// opens it and writes, and read) never touch the loop's state: the loop
// queues adds and removes in the outbox, and read forwards events to the
// loop, which also gets exactly one streamMsg with err set when the stream
// ends.
type stream struct {
	addr   string
	sub    context.Context // the subscription's: outlives ctx, to report the end
	ctx    context.Context
	cancel context.CancelCauseFunc

	// Owned by the loop.
	timelines map[string]struct{} // added here and not dropped since
	idleSince time.Time

	// The outbox, drained by run. Removes are sent before adds, so a remove
	// then an add of one timeline (a restart) keep their order.
	mu      sync.Mutex
	adds    map[string]uint64
	removes map[string]struct{}
	kick    chan struct{}
}

// streamMsg is an event read from a stream, or (err set) the stream's end.
type streamMsg struct {
	st  *stream
	ev  *syncv1.SubscribeEvent
	err error
}

func newStream(sub context.Context, addr string) *stream {
	ctx, cancel := context.WithCancelCause(sub)
	return &stream{
		addr:      addr,
		sub:       sub,
		ctx:       ctx,
		cancel:    cancel,
		timelines: map[string]struct{}{},
		adds:      map[string]uint64{},
		removes:   map[string]struct{}{},
		kick:      make(chan struct{}, 1),
	}
}

func (st *stream) queueAdd(timeline string, after uint64) {
	st.mu.Lock()
	st.adds[timeline] = after
	st.mu.Unlock()
	st.poke()
}

func (st *stream) queueRemove(timeline string) {
	st.mu.Lock()
	delete(st.adds, timeline) // not sent yet: no need to
	st.removes[timeline] = struct{}{}
	st.mu.Unlock()
	st.poke()
}

func (st *stream) poke() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

// take empties the outbox into at most two requests: removes, then adds.
func (st *stream) take() (removes, adds *syncv1.SubscribeRequest) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.removes) > 0 {
		removes = &syncv1.SubscribeRequest{}
		for tl := range st.removes {
			removes.Remove = append(removes.Remove, tl)
		}
		st.removes = map[string]struct{}{}
	}
	if len(st.adds) > 0 {
		adds = &syncv1.SubscribeRequest{}
		for tl, after := range st.adds {
			adds.Add = append(adds.Add, &syncv1.SubscribeFrom{Timeline: proto.String(tl), AfterSeq: proto.Uint64(after)})
		}
		st.adds = map[string]uint64{}
	}
	return removes, adds
}

// run opens the stream, starts its reader and writes the outbox until the
// stream ends.
func (st *stream) run(wg *sync.WaitGroup, conn *grpc.ClientConn, notifyOnly bool, silence time.Duration, in chan<- streamMsg) {
	defer wg.Done()
	// Opening waits for a connection that may never come (a blackholed
	// node): bound it like a silent stream.
	slow := time.AfterFunc(silence, func() {
		st.cancel(fmt.Errorf("client: subscribe at %s: not open after %v", st.addr, silence))
	})
	cl, err := syncv1.NewSyncClient(conn).Subscribe(st.ctx)
	slow.Stop()
	if err != nil {
		if st.ctx.Err() != nil {
			err = context.Cause(st.ctx) // ours (too slow, closed) says more
		} else {
			err = fmt.Errorf("client: subscribe at %s: %w", st.addr, typed(err))
		}
		st.report(in, err)
		return
	}
	wg.Add(1)
	go st.read(wg, cl, silence, in)
	first := true
	for {
		select {
		case <-st.ctx.Done():
			return
		case <-st.kick:
		}
		removes, adds := st.take()
		if first {
			// Nothing is followed on a new stream, so its removes are moot;
			// notify_only counts on the first message only, so it is sent
			// even when there is nothing to add.
			first, removes = false, nil
			if adds == nil {
				adds = &syncv1.SubscribeRequest{}
			}
			adds.NotifyOnly = proto.Bool(notifyOnly)
		}
		for _, req := range []*syncv1.SubscribeRequest{removes, adds} {
			if req == nil {
				continue
			}
			if err := cl.Send(req); err != nil {
				// io.EOF: the server ended the stream; read gets its status.
				if !errors.Is(err, io.EOF) {
					st.cancel(fmt.Errorf("client: subscribe at %s: send: %w", st.addr, err))
				}
				return
			}
		}
	}
}

// read forwards the stream's events to the loop. Only time spent waiting in
// Recv counts as silence: time blocked on a busy loop (a consumer not
// reading) does not.
func (st *stream) read(wg *sync.WaitGroup, cl grpc.BidiStreamingClient[syncv1.SubscribeRequest, syncv1.SubscribeEvent], silence time.Duration, in chan<- streamMsg) {
	defer wg.Done()
	silent := fmt.Errorf("client: subscribe at %s: stream silent for %v", st.addr, silence)
	watchdog := time.AfterFunc(silence, func() { st.cancel(silent) })
	defer watchdog.Stop()
	for {
		watchdog.Reset(silence)
		ev, err := cl.Recv()
		watchdog.Stop()
		if err != nil {
			if st.ctx.Err() != nil {
				err = context.Cause(st.ctx) // ours (silence, send) says more than Canceled
			} else {
				err = fmt.Errorf("client: subscribe at %s: %w", st.addr, typed(err))
			}
			st.report(in, err)
			return
		}
		if ev.GetHeartbeat() != nil {
			continue // it has done its job: the watchdog was reset
		}
		select {
		case in <- streamMsg{st: st, ev: ev}:
		case <-st.ctx.Done(): // the next Recv fails and reports
		}
	}
}

// report tells the loop that the stream ended; the loop may have closed it
// and forgotten it, or be gone.
func (st *stream) report(in chan<- streamMsg, err error) {
	st.cancel(err)
	select {
	case in <- streamMsg{st: st, err: err}:
	case <-st.sub.Done():
	}
}

// Routing helpers for subscriptions, on top of the Client's.

// connTo returns the connection to addr.
func (c *Client) connTo(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connLocked(addr)
}

// groupFor is the group the client's shard map gives timeline, 0 without a
// map.
func (c *Client) groupFor(timeline string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.routes == nil {
		return 0
	}
	return uint64(c.routes.m.GroupFor(timeline))
}

func (c *Client) hasRoutes() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.routes != nil
}

// routesDue tells whether fetchRoutes would ask for the shard map now.
func (c *Client) routesDue() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.routes == nil && time.Since(c.lastFetch) >= routesRetry
}

// nodeFailed forgets addr as the leader of any group, so that the next
// calls try other replicas.
func (c *Client) nodeFailed(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for g, a := range c.leaders {
		if a == addr {
			delete(c.leaders, g)
		}
	}
	if c.leader == addr {
		c.leader = ""
	}
}

// moved records a Moved answer about timeline from the node at addr: the
// leader it names, else that addr does not serve the group; a group other
// than the one the shard map gives means the map is out of date.
func (c *Client) moved(timeline, addr string, m *syncv1.Moved) {
	ours := c.groupFor(timeline)
	if m.GetLeaderAddr() != "" && m.GetGroupId() != uint64(shard.MetaGroup) {
		c.hinted(timeline, ours, &syncv1.NotLeader{LeaderAddr: m.GetLeaderAddr(), GroupId: m.GetGroupId()})
		return
	}
	c.failed(ours, addr)
	if ours != 0 && m.GetGroupId() != 0 && ours != m.GetGroupId() {
		c.forgetRoutes()
	}
}
