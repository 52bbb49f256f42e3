package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// waitFor bounds every wait of these tests.
const waitFor = 5 * time.Second

// fakeLog is the cluster's data as the fake nodes serve it to Pull and
// Head: seqs oldest..head of each timeline, pages of up to page entries.
type fakeLog struct {
	mu      sync.Mutex
	entries map[string][]*syncv1.Entry // by seq - 1; trimmed ones are nil
	oldest  map[string]uint64
	page    int
	pulls   []string // "timeline>after" of each Pull
	heads   []string // timeline of each Head
	pullErr error    // when set, what Pull answers
}

func newFakeLog() *fakeLog {
	return &fakeLog{entries: map[string][]*syncv1.Entry{}, oldest: map[string]uint64{}, page: 1000}
}

// append adds entries up to seq to tl.
func (g *fakeLog) append(tl string, upTo uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for seq := uint64(len(g.entries[tl])) + 1; seq <= upTo; seq++ {
		g.entries[tl] = append(g.entries[tl], &syncv1.Entry{Timeline: tl, Seq: seq, Payload: []byte(fmt.Sprint(seq))})
	}
	if g.oldest[tl] == 0 && upTo > 0 {
		g.oldest[tl] = 1
	}
}

// trim drops the entries of tl below oldest.
func (g *fakeLog) trim(tl string, oldest uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for seq := g.oldest[tl]; seq < oldest; seq++ {
		g.entries[tl][seq-1] = nil
	}
	g.oldest[tl] = oldest
}

func (g *fakeLog) failPulls(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pullErr = err
}

func (g *fakeLog) pull(tl string, after uint64, limit int) (*syncv1.PullResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pulls = append(g.pulls, fmt.Sprintf("%s>%d", tl, after))
	if g.pullErr != nil {
		return nil, g.pullErr
	}
	head, oldest := uint64(len(g.entries[tl])), g.oldest[tl]
	resp := &syncv1.PullResponse{HeadSeq: head, OldestSeq: oldest}
	switch {
	case after == head:
		resp.Status = syncv1.PullStatus_PULL_STATUS_UP_TO_DATE
	case after > head:
		resp.Status = syncv1.PullStatus_PULL_STATUS_AHEAD
	case after+1 < oldest:
		resp.Status = syncv1.PullStatus_PULL_STATUS_RESET
	default:
		end := min(after+uint64(min(limit, g.page)), head)
		resp.Entries = g.entries[tl][after:end]
		resp.Status = syncv1.PullStatus_PULL_STATUS_OK
		if end < head {
			resp.Status = syncv1.PullStatus_PULL_STATUS_MORE
		}
	}
	return resp, nil
}

func (g *fakeLog) head(tl string) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return uint64(len(g.entries[tl]))
}

func (g *fakeLog) calls() (pulls, heads []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.pulls), slices.Clone(g.heads)
}

// fakeNode serves Pull and Head from its log and hands every Subscribe
// request, with its stream, to the test, which answers through the stream.
// Its Admin service answers ShardMap once the test has set one.
type fakeNode struct {
	syncv1.UnimplementedSyncServer
	addr  string
	log   *fakeLog
	reqs  chan streamReq
	admin *fakeAdmin
	stop  func()
}

type fakeAdmin struct {
	syncv1.UnimplementedAdminServer
	mu   sync.Mutex
	resp *syncv1.ShardMapResponse
}

func (a *fakeAdmin) ShardMap(context.Context, *syncv1.ShardMapRequest) (*syncv1.ShardMapResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.resp == nil {
		return nil, status.Error(codes.Unimplemented, "no shard map here")
	}
	return a.resp, nil
}

// setShardMap makes the node answer a map (version bumped each time) with
// every slot in group, whose one replica is at addr.
func (n *fakeNode) setShardMap(group uint64, addr string) {
	a := n.admin
	a.mu.Lock()
	defer a.mu.Unlock()
	a.resp = &syncv1.ShardMapResponse{
		Version:   a.resp.GetVersion() + 1,
		Groups:    []*syncv1.ShardGroupInfo{{Id: group, Ranges: []*syncv1.SlotRange{{Start: 0, End: shard.SlotCount}}, Replicas: []string{"n"}}},
		NodeAddrs: map[string]string{"n": addr},
	}
}

type streamReq struct {
	st  *fakeStream
	req *syncv1.SubscribeRequest
}

// fakeStream is the server side of one Subscribe stream. Its handler does
// the sends (gRPC forbids them once the handler has returned), for the test.
type fakeStream struct {
	out  chan outMsg
	end  chan error
	done chan struct{} // closed when the handler returns
}

type outMsg struct {
	ev  *syncv1.SubscribeEvent
	ack chan error
}

var errStreamDone = errors.New("fake: stream ended")

func startNode(t *testing.T, log *fakeLog) *fakeNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{addr: lis.Addr().String(), log: log, reqs: make(chan streamReq, 64), admin: &fakeAdmin{}}
	s := grpc.NewServer()
	syncv1.RegisterSyncServer(s, n)
	syncv1.RegisterAdminServer(s, n.admin)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = s.Serve(lis)
	}()
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			s.Stop()
			<-served
		})
	}
	t.Cleanup(n.stop)
	return n
}

func (n *fakeNode) Pull(_ context.Context, req *syncv1.PullRequest) (*syncv1.PullResponse, error) {
	return n.log.pull(req.GetTimeline(), req.GetAfterSeq(), int(req.GetLimit()))
}

func (n *fakeNode) Head(_ context.Context, req *syncv1.HeadRequest) (*syncv1.HeadResponse, error) {
	n.log.mu.Lock()
	defer n.log.mu.Unlock()
	n.log.heads = append(n.log.heads, req.GetTimeline())
	return &syncv1.HeadResponse{HeadSeq: uint64(len(n.log.entries[req.GetTimeline()]))}, nil
}

func (n *fakeNode) Subscribe(ss syncv1.Sync_SubscribeServer) error {
	st := &fakeStream{out: make(chan outMsg), end: make(chan error, 1), done: make(chan struct{})}
	defer close(st.done)
	ctx := ss.Context()
	go func() {
		for {
			req, err := ss.Recv()
			if err != nil {
				return
			}
			select {
			case n.reqs <- streamReq{st: st, req: req}:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case m := <-st.out:
			err := ss.Send(m.ev)
			m.ack <- err
			if err != nil {
				return err
			}
		case err := <-st.end:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// next returns the next Subscribe request the node received, on any stream.
func (n *fakeNode) next(t *testing.T) streamReq {
	t.Helper()
	select {
	case r := <-n.reqs:
		return r
	case <-time.After(waitFor):
		t.Fatalf("%s: no Subscribe request within %v", n.addr, waitFor)
		return streamReq{}
	}
}

// nextAdd skips requests until one adds timelines, which it returns.
func (n *fakeNode) nextAdd(t *testing.T) streamReq {
	t.Helper()
	for {
		if r := n.next(t); len(r.req.GetAdd()) > 0 {
			return r
		}
	}
}

// trySend sends ev, waiting until gRPC has taken it.
func (st *fakeStream) trySend(ev *syncv1.SubscribeEvent) error {
	ack := make(chan error, 1)
	select {
	case st.out <- outMsg{ev: ev, ack: ack}:
		return <-ack
	case <-st.done:
		return errStreamDone
	}
}

func (st *fakeStream) send(t *testing.T, evs ...*syncv1.SubscribeEvent) {
	t.Helper()
	for _, ev := range evs {
		if err := st.trySend(ev); err != nil {
			t.Fatalf("send %v: %v", ev, err)
		}
	}
}

// fail ends the stream with err.
func (st *fakeStream) fail(err error) {
	select {
	case st.end <- err:
	case <-st.done:
	}
}

func entry(tl string, seq uint64) *syncv1.SubscribeEvent {
	return &syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Entry{Entry: &syncv1.Entry{Timeline: tl, Seq: seq, Payload: []byte(fmt.Sprint(seq))}}}
}

func entries(tl string, from, to uint64) []*syncv1.SubscribeEvent {
	var evs []*syncv1.SubscribeEvent
	for seq := from; seq <= to; seq++ {
		evs = append(evs, entry(tl, seq))
	}
	return evs
}

func gapEvent(tl string, from uint64) *syncv1.SubscribeEvent {
	return &syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Gap{Gap: &syncv1.Gap{Timeline: tl, FromSeq: from}}}
}

func movedEvent(tl, addr string) *syncv1.SubscribeEvent {
	return &syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Moved{Moved: &syncv1.Moved{Timeline: tl, GroupId: 1, LeaderAddr: addr}}}
}

func resetEvent(tl string, oldest uint64) *syncv1.SubscribeEvent {
	return &syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Reset_{Reset_: &syncv1.Reset{Timeline: tl, OldestSeq: oldest}}}
}

func notification(tl string, head uint64) *syncv1.SubscribeEvent {
	return &syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Notification{Notification: &syncv1.Notification{Timeline: tl, HeadSeq: head}}}
}

func heartbeat() *syncv1.SubscribeEvent {
	return &syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Heartbeat{Heartbeat: &syncv1.Heartbeat{}}}
}

// adds renders a request's adds as "timeline>after".
func adds(req *syncv1.SubscribeRequest) []string {
	var out []string
	for _, a := range req.GetAdd() {
		out = append(out, fmt.Sprintf("%s>%d", a.GetTimeline(), a.GetAfterSeq()))
	}
	slices.Sort(out)
	return out
}

// show renders an event as "t:3", "t:head=3" or "t:reset@3".
func show(ev Event) string {
	switch {
	case ev.Reset:
		return fmt.Sprintf("%s:reset@%d", ev.Timeline, ev.OldestSeq)
	case ev.Entry != nil:
		if ev.Entry.GetTimeline() != ev.Timeline {
			return fmt.Sprintf("%s:entry of %s", ev.Timeline, ev.Entry.GetTimeline())
		}
		return fmt.Sprintf("%s:%d", ev.Timeline, ev.Entry.GetSeq())
	default:
		return fmt.Sprintf("%s:head=%d", ev.Timeline, ev.Head)
	}
}

func seqs(tl string, from, to uint64) []string {
	var out []string
	for seq := from; seq <= to; seq++ {
		out = append(out, fmt.Sprintf("%s:%d", tl, seq))
	}
	return out
}

// harness is a client seeded with node a, a second node b sharing a's log,
// and a subscription.
type harness struct {
	log  *fakeLog
	a, b *fakeNode
	c    *Client
	sub  *Subscription
}

func newHarness(t *testing.T, o SubscribeOptions) *harness {
	t.Helper()
	h := newNodes(t)
	h.subscribe(t, o)
	return h
}

// newNodes is a harness without its subscription yet.
func newNodes(t *testing.T) *harness {
	t.Helper()
	h := &harness{log: newFakeLog()}
	h.a, h.b = startNode(t, h.log), startNode(t, h.log)
	h.c = newClient(t, h.a.addr)
	return h
}

func (h *harness) subscribe(t *testing.T, o SubscribeOptions) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sub, err := h.c.Subscribe(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	h.sub = sub
	t.Cleanup(func() { sub.Close() })
}

func (h *harness) add(t *testing.T, tl string, after uint64) {
	t.Helper()
	if err := h.sub.Add(tl, after); err != nil {
		t.Fatal(err)
	}
}

// expect reads len(want) events and checks they are want, in order.
func (h *harness) expect(t *testing.T, want ...string) {
	t.Helper()
	if got := h.take(t, len(want)); !slices.Equal(got, want) {
		t.Fatalf("got %q; want %q", got, want)
	}
}

// take reads the next n events.
func (h *harness) take(t *testing.T, n int) []string {
	t.Helper()
	return h.takeWithin(t, n, waitFor)
}

func (h *harness) takeWithin(t *testing.T, n int, within time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.After(within)
	for len(got) < n {
		select {
		case ev, ok := <-h.sub.Events():
			if !ok {
				t.Fatalf("events closed (%v) after %q; want %d", h.sub.Err(), got, n)
			}
			got = append(got, show(ev))
		case <-deadline:
			t.Fatalf("got %q within %v; want %d events", got, within, n)
		}
	}
	return got
}

// of keeps the events of timeline tl.
func of(tl string, evs []string) []string {
	return slices.DeleteFunc(slices.Clone(evs), func(ev string) bool { return !strings.HasPrefix(ev, tl+":") })
}
