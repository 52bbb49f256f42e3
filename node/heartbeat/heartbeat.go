// Package heartbeat coalesces the Raft heartbeats of all the groups a node
// leads into one message per target node.
//
// Every leader of every group heartbeats each of its followers about ten
// times a second (hashicorp/raft: a tenth of the heartbeat timeout), each
// an RPC of its own: with 64 groups on 3 nodes that was most of a core of
// an idle cluster, and a fixed cost under load. Here a group's transport
// (Wrap) hands its heartbeats to the node's Coalescer, which holds each for
// up to a window, sends all those queued for the same node as one frame on
// the shared Raft port, and completes each with its own group's answer.
// The receiving node runs each through its group's Raft heartbeat handler,
// as hashicorp/raft's transport would. Everything else a group sends
// (appends, votes, snapshots) goes through its own transport unchanged.
package heartbeat

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Window is how long a heartbeat may wait for others to the same node.
// Raft only needs heartbeats well within its lease and election timeouts;
// waiting lets the heartbeats of many groups share one round trip.
const Window = 10 * time.Millisecond

const (
	// maxBatch bounds the heartbeats of one frame.
	maxBatch = 4096
	// maxField bounds an id or address in a frame.
	maxField = 1024
	// rpcTimeout bounds one frame's round trip.
	rpcTimeout = 2 * time.Second
	// handlerTimeout bounds one group's answer, so that a group that does
	// not answer (its Raft shutting down ignores heartbeats) cannot hold
	// the others of its frame past their election timeouts.
	handlerTimeout = 200 * time.Millisecond
)

// ErrShutdown: the coalescer is closed.
var ErrShutdown = errors.New("heartbeat: shut down")

// Coalescer sends and serves the coalesced heartbeats of one node.
type Coalescer struct {
	layer raft.StreamLayer
	log   *slog.Logger

	mu       sync.Mutex
	handlers map[uint64]func(raft.RPC)
	targets  map[raft.ServerAddress]*target
	closed   bool

	stop chan struct{}
	wg   sync.WaitGroup

	// Heartbeats and Frames count what this node sent: heartbeats, and the
	// frames that carried them.
	Heartbeats, Frames atomic.Uint64
}

// New serves and sends coalesced heartbeats over layer (the node's Raft
// port, under a group id of its own).
func New(layer raft.StreamLayer, log *slog.Logger) *Coalescer {
	c := &Coalescer{layer: layer, log: log, handlers: map[uint64]func(raft.RPC){}, targets: map[raft.ServerAddress]*target{}, stop: make(chan struct{})}
	c.wg.Go(c.acceptLoop)
	return c
}

// Close stops sending and serving.
func (c *Coalescer) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.stop)
	c.mu.Unlock()
	err := c.layer.Close()
	c.wg.Wait()
	return err
}

func (c *Coalescer) setHandler(group uint64, h func(raft.RPC)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h == nil {
		delete(c.handlers, group)
	} else {
		c.handlers[group] = h
	}
}

func (c *Coalescer) handler(group uint64) func(raft.RPC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handlers[group]
}

// pending is one heartbeat waiting for its answer.
type pending struct {
	group uint64
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error // the answering node's refusal of this one heartbeat
	done  chan error
}

// target sends the heartbeats queued for one node, a frame at a time.
type target struct {
	addr  raft.ServerAddress
	queue chan *pending
}

// send queues a heartbeat for addr and waits for its answer.
func (c *Coalescer) send(addr raft.ServerAddress, group uint64, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrShutdown
	}
	t := c.targets[addr]
	if t == nil {
		t = &target{addr: addr, queue: make(chan *pending, maxBatch)}
		c.targets[addr] = t
		c.wg.Go(func() { c.sendLoop(t) })
	}
	c.mu.Unlock()
	p := &pending{group: group, req: req, resp: resp, done: make(chan error, 1)}
	select {
	case t.queue <- p:
	case <-c.stop:
		return ErrShutdown
	}
	select {
	case err := <-p.done:
		return err
	case <-c.stop:
		return ErrShutdown
	}
}

func (c *Coalescer) sendLoop(t *target) {
	var conn net.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var first *pending
		select {
		case first = <-t.queue:
		case <-c.stop:
			return
		}
		batch := []*pending{first}
		timer.Reset(Window)
	collect:
		for len(batch) < maxBatch {
			select {
			case p := <-t.queue:
				batch = append(batch, p)
			case <-timer.C:
				break collect
			case <-c.stop:
				timer.Stop()
				for _, p := range batch {
					p.done <- ErrShutdown
				}
				return
			}
		}
		timer.Stop()
		c.Heartbeats.Add(uint64(len(batch)))
		c.Frames.Add(1)
		var err error
		if conn == nil {
			conn, err = c.layer.Dial(t.addr, rpcTimeout)
		}
		if err == nil {
			err = exchange(conn, batch)
		}
		if err != nil && conn != nil {
			conn.Close()
			conn = nil
		}
		for _, p := range batch {
			if err != nil {
				p.done <- err
			} else {
				p.done <- p.err // nil: exchange filled the response
			}
		}
	}
}

// exchange writes one frame of heartbeats and reads the answers.
func exchange(conn net.Conn, batch []*pending) error {
	_ = conn.SetDeadline(time.Now().Add(rpcTimeout))
	w := bufio.NewWriter(conn)
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(len(batch)))
	for _, p := range batch {
		b = binary.BigEndian.AppendUint64(b, p.group)
		b = binary.BigEndian.AppendUint64(b, p.req.Term)
		b = append(b, byte(p.req.ProtocolVersion))
		b = appendField(b, p.req.ID)
		b = appendField(b, p.req.Addr)
		b = appendField(b, p.req.Leader)
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	for _, p := range batch {
		var head [8 + 8 + 8 + 1]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return fmt.Errorf("heartbeat: read answer: %w", err)
		}
		if g := binary.BigEndian.Uint64(head[:]); g != p.group {
			return fmt.Errorf("heartbeat: answer for group %d, expected %d", g, p.group)
		}
		msg, err := readField(r)
		if err != nil {
			return err
		}
		flags := head[24]
		if flags&flagError != 0 {
			p.err = errors.New(string(msg)) // this group's own failure
			continue
		}
		*p.resp = raft.AppendEntriesResponse{
			Term:           binary.BigEndian.Uint64(head[8:]),
			LastLog:        binary.BigEndian.Uint64(head[16:]),
			Success:        flags&flagSuccess != 0,
			NoRetryBackoff: flags&flagNoRetryBackoff != 0,
		}
	}
	return nil
}

// Answer flags.
const (
	flagSuccess        = 1
	flagNoRetryBackoff = 2
	flagError          = 4
)

func appendField(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
	return append(b, f...)
}

func readField(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, fmt.Errorf("heartbeat: read field: %w", err)
	}
	l := int(binary.BigEndian.Uint16(n[:]))
	if l > maxField {
		return nil, fmt.Errorf("heartbeat: field of %d bytes", l)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("heartbeat: read field: %w", err)
	}
	return b, nil
}

func (c *Coalescer) acceptLoop() {
	for {
		conn, err := c.layer.Accept()
		if err != nil {
			select {
			case <-c.stop:
				return
			default:
			}
			c.log.Debug("heartbeat: accept", "err", err)
			return
		}
		c.wg.Go(func() { c.serve(conn) })
	}
}

// serve answers the frames of one connection until it closes.
func (c *Coalescer) serve(conn net.Conn) {
	defer conn.Close()
	done := make(chan struct{})
	defer close(done)
	go func() { // unblock reads at shutdown
		select {
		case <-c.stop:
			conn.Close()
		case <-done:
		}
	}()
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	for {
		var n [4]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return
		}
		count := binary.BigEndian.Uint32(n[:])
		if count == 0 || count > maxBatch {
			return
		}
		items := make([]item, 0, count)
		for range count {
			var head [8 + 8 + 1]byte
			if _, err := io.ReadFull(r, head[:]); err != nil {
				return
			}
			req := &raft.AppendEntriesRequest{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion(head[16])},
				Term:      binary.BigEndian.Uint64(head[8:]),
			}
			var err error
			if req.ID, err = readField(r); err != nil {
				return
			}
			if req.Addr, err = readField(r); err != nil {
				return
			}
			if req.Leader, err = readField(r); err != nil {
				return
			}
			items = append(items, item{group: binary.BigEndian.Uint64(head[:]), req: req})
		}
		out := c.answerAll(items)
		if _, err := w.Write(out); err != nil {
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

// item is one heartbeat of a frame being served.
type item struct {
	group uint64
	req   *raft.AppendEntriesRequest
}

// answerAll runs every heartbeat of a frame through its group's Raft at
// once and encodes the answers in order.
func (c *Coalescer) answerAll(items []item) []byte {
	answers := make([][]byte, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Go(func() { answers[i] = c.answer(nil, it.group, it.req) })
	}
	wg.Wait()
	var out []byte
	for _, a := range answers {
		out = append(out, a...)
	}
	return out
}

// answer runs one heartbeat through its group's Raft and appends the answer.
func (c *Coalescer) answer(out []byte, group uint64, req *raft.AppendEntriesRequest) []byte {
	fail := func(msg string) []byte {
		out = binary.BigEndian.AppendUint64(out, group)
		out = append(out, make([]byte, 16)...)
		out = append(out, flagError)
		return appendField(out, []byte(msg))
	}
	h := c.handler(group)
	if h == nil {
		return fail(fmt.Sprintf("no replica of group %d here", group))
	}
	ch := make(chan raft.RPCResponse, 1)
	h(raft.RPC{Command: req, RespChan: ch})
	var res raft.RPCResponse
	select {
	case res = <-ch:
	case <-time.After(handlerTimeout):
		return fail("heartbeat handler did not answer")
	case <-c.stop:
		return fail("shutting down")
	}
	if res.Error != nil {
		return fail(res.Error.Error())
	}
	resp, ok := res.Response.(*raft.AppendEntriesResponse)
	if !ok {
		return fail(fmt.Sprintf("heartbeat handler answered %T", res.Response))
	}
	var flags byte
	if resp.Success {
		flags |= flagSuccess
	}
	if resp.NoRetryBackoff {
		flags |= flagNoRetryBackoff
	}
	out = binary.BigEndian.AppendUint64(out, group)
	out = binary.BigEndian.AppendUint64(out, resp.Term)
	out = binary.BigEndian.AppendUint64(out, resp.LastLog)
	out = append(out, flags)
	return appendField(out, nil)
}

// isHeartbeat is hashicorp/raft's own test (net_transport.go).
func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	leader := req.Addr
	if len(leader) == 0 {
		leader = req.Leader
	}
	return req.Term != 0 && leader != nil && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

// Transport is a group's Raft transport whose heartbeats go through the
// node's Coalescer.
type Transport struct {
	*raft.NetworkTransport
	group uint64
	c     *Coalescer
	// urgent counts callers waiting on heartbeats (a leader verifying its
	// leadership for a read): while it is above 0 they go at once, on the
	// group's own connections, instead of waiting for the window.
	urgent atomic.Int32
}

var (
	_ raft.Transport   = (*Transport)(nil)
	_ raft.WithClose   = (*Transport)(nil)
	_ raft.WithPreVote = (*Transport)(nil)
)

// Wrap routes a group's heartbeats through c.
func Wrap(inner *raft.NetworkTransport, group uint64, c *Coalescer) *Transport {
	return &Transport{NetworkTransport: inner, group: group, c: c}
}

// AppendEntries sends heartbeats coalesced, everything else (and
// heartbeats while someone waits on them) directly.
func (t *Transport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if isHeartbeat(args) && t.urgent.Load() == 0 {
		return t.c.send(target, t.group, args, resp)
	}
	return t.NetworkTransport.AppendEntries(id, target, args, resp)
}

// Urgent makes the group's heartbeats go at once until the returned func
// is called. hashicorp/raft's VerifyLeader is answered by a round of
// heartbeats: a linearizable read must not wait the window for them.
func (t *Transport) Urgent() (done func()) {
	t.urgent.Add(1)
	return func() { t.urgent.Add(-1) }
}

// SetHeartbeatHandler registers Raft's fast heartbeat path with both the
// group's own transport and the coalescer.
func (t *Transport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	t.NetworkTransport.SetHeartbeatHandler(cb)
	t.c.setHandler(t.group, cb)
}

// Detach stops serving this group's coalesced heartbeats (before its Raft
// shuts down: a shut-down Raft leaves heartbeats unanswered).
func (t *Transport) Detach() { t.c.setHandler(t.group, nil) }

// Close unregisters the group and closes its transport.
func (t *Transport) Close() error {
	t.c.setHandler(t.group, nil)
	return t.NetworkTransport.Close()
}
