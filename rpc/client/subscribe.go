package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// A Subscription follows timelines over Subscribe streams, one stream per
// node, and hands their entries (or, with NotifyOnly, their new heads) to
// Events. Per timeline it delivers each seq exactly once and in order,
// last+1 after last, whatever happens underneath: a Gap (the subscriber fell
// behind), a Moved (the timeline's group is served elsewhere), a broken or
// silent stream, a node restart or a leader change. Push is the fast path;
// the client fills any hole with Pull before it resumes the stream. The one
// exception is retention: entries trimmed before they were delivered are
// reported by an Event with Reset set, after which delivery goes on from
// OldestSeq.
//
// Delivery blocks while Events is full, so a consumer that stops reading
// stops the streams too (the server then drops the timelines with Gaps,
// which the client recovers from by pulling once the consumer reads again):
// memory stays bounded by the Buffer, a page of Pull per catch-up in flight
// and a few words per timeline.
type Subscription struct {
	c      *Client
	opts   SubscribeOptions
	ctx    context.Context
	cancel context.CancelCauseFunc
	events chan Event
	wg     sync.WaitGroup

	// Add and Remove leave their commands here for the loop, last one per
	// timeline wins, so they never wait for a loop that is blocked on a
	// full Events.
	mu   sync.Mutex
	cmds map[string]command
	kick chan struct{}
}

// SubscribeOptions tune a Subscription.
type SubscribeOptions struct {
	// NotifyOnly streams notifications (a timeline's new head) instead of
	// entries: Event.Head is set instead of Event.Entry.
	NotifyOnly bool
	// Buffer is the capacity of Events (default 256).
	Buffer int
	// StreamSilence is how long a stream may stay silent before the client
	// takes it for dead and resumes its timelines elsewhere (default 5s; the
	// server sends a heartbeat about every second when idle).
	StreamSilence time.Duration
}

// Event is the next thing a Subscription has to say about one timeline:
// exactly one of an entry, a new head or a reset.
type Event struct {
	Timeline string
	// Entry is the next entry: its seq is the previous one's plus one
	// (entry mode).
	Entry *syncv1.Entry
	// Head is the timeline's new newest seq, above any reported before
	// (NotifyOnly mode).
	Head uint64
	// Reset says entries were trimmed by retention before they could be
	// delivered: the next entry is OldestSeq.
	Reset     bool
	OldestSeq uint64
}

// ErrInvalidTimeline is returned by Subscription.Add for an id the server
// would refuse (it matches ErrInvalidArgument too).
var ErrInvalidTimeline = errors.New("client: invalid timeline id")

// ErrSubscriptionEnded is returned by Subscription.Add after Close, after
// the context ended or after a caller error (see Err).
var ErrSubscriptionEnded = errors.New("client: subscription ended")

// errClosed is the cause of a subscription's end by Close: not an error.
var errClosed = errors.New("client: subscription closed")

// maxTimelineBytes is fsm.MaxTimelineIDBytes, repeated so that the client
// does not import the storage layer.
const maxTimelineBytes = 256

const (
	defaultSubscribeBuffer = 256
	defaultStreamSilence   = 5 * time.Second
)

// command is a pending Add (add set) or Remove of one timeline.
type command struct {
	add   bool
	after uint64
}

// Subscribe opens a Subscription. It follows nothing until Add; streams are
// opened as timelines are added. The subscription ends with ctx, with Close
// or with a caller error the server reports (see Err).
func (c *Client) Subscribe(ctx context.Context, o SubscribeOptions) (*Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("client: subscribe: %w", err)
	}
	if o.Buffer <= 0 {
		o.Buffer = defaultSubscribeBuffer
	}
	if o.StreamSilence <= 0 {
		o.StreamSilence = defaultStreamSilence
	}
	// Best effort: with the shard map the first adds go straight to the
	// right nodes rather than through a Moved.
	c.fetchRoutes(ctx)
	sctx, cancel := context.WithCancelCause(ctx)
	s := &Subscription{
		c:      c,
		opts:   o,
		ctx:    sctx,
		cancel: cancel,
		events: make(chan Event, o.Buffer),
		cmds:   map[string]command{},
		kick:   make(chan struct{}, 1),
	}
	l := newLoop(s)
	s.wg.Add(1)
	go l.run()
	return s, nil
}

// Add follows timeline from after afterSeq: the first event is afterSeq+1
// (entry mode) or a head above afterSeq (NotifyOnly). Adding a timeline
// already followed starts it again from afterSeq. An invalid id is refused
// with ErrInvalidTimeline and changes nothing.
func (s *Subscription) Add(timeline string, afterSeq uint64) error {
	if err := validTimeline(timeline); err != nil {
		return err
	}
	return s.command(timeline, command{add: true, after: afterSeq})
}

// Remove stops following timeline. Events already in Events stay there.
func (s *Subscription) Remove(timeline string) {
	_ = s.command(timeline, command{}) // after the end there is nothing to stop
}

func (s *Subscription) command(timeline string, cmd command) error {
	if s.ctx.Err() != nil {
		return fmt.Errorf("client: subscribe: %q: %w", timeline, ErrSubscriptionEnded)
	}
	s.mu.Lock()
	s.cmds[timeline] = cmd
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // the loop is already due to look
	}
	return nil
}

// takeCommands hands the pending commands to the loop.
func (s *Subscription) takeCommands() map[string]command {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmds := s.cmds
	s.cmds = map[string]command{}
	return cmds
}

// Events delivers the subscription's events. It is closed when the
// subscription ends.
func (s *Subscription) Events() <-chan Event { return s.events }

// Err tells why the subscription ended: nil while it runs and after Close,
// the context's error, or the server's answer to a caller error (such as
// InvalidArgument or ResourceExhausted), which retrying would not cure.
func (s *Subscription) Err() error {
	if s.ctx.Err() == nil {
		return nil
	}
	if cause := context.Cause(s.ctx); !errors.Is(cause, errClosed) {
		return cause
	}
	return nil
}

// Close ends the subscription and waits until its streams are closed and
// all its goroutines have returned. It does not close the Client.
func (s *Subscription) Close() error {
	s.cancel(errClosed)
	s.wg.Wait()
	return nil
}

// validTimeline refuses what the server would, as InvalidArgument (which
// ErrInvalidTimeline is a kind of).
func validTimeline(id string) error {
	switch {
	case id == "":
		return newError(codes.InvalidArgument, ErrInvalidTimeline, "empty")
	case len(id) > maxTimelineBytes:
		return newError(codes.InvalidArgument, ErrInvalidTimeline, "%d bytes; the limit is %d", len(id), maxTimelineBytes)
	case !utf8.ValidString(id):
		return newError(codes.InvalidArgument, ErrInvalidTimeline, "%q is not valid UTF-8", id)
	}
	return nil
}
