// Package raftmux lets every Raft group a node hosts share one TCP port: a
// dialer names the group in a short header and the listener hands the
// connection to that group's raft.StreamLayer. It also answers an identity
// probe, so a node handling a Join can check that a Raft address belongs to
// the node that claims it. See DESIGN.md.
package raftmux

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// The Raft traffic of every group on a node shares one TCP port. A dialer
// opens each connection with a header naming the group; the listening side
// reads it and hands the connection to that group's transport.
//
// One group id is reserved for the identity probe: a dialer that names
// ProbeGroup is answered with "SSR1", a 2-byte big-endian length and this
// node's id, and the connection is closed. A node handling a join uses it to
// check that the Raft address a newcomer gave is really that node's.
const (
	muxMagic            = "SSR1"
	muxHeaderLen        = len(muxMagic) + 8
	muxHandshakeTimeout = 5 * time.Second
	muxAcceptBacklog    = 16

	// ProbeGroup is the reserved group id of the identity probe; no
	// group may use it.
	ProbeGroup uint64 = math.MaxUint64
	// HeartbeatGroup is the reserved group id of the node's coalesced Raft
	// heartbeats (node/heartbeat).
	HeartbeatGroup uint64 = math.MaxUint64 - 1
	// MaxNodeIDBytes bounds the node id a probe answers with, so a
	// prober never reads more than about a kilobyte from a peer.
	MaxNodeIDBytes   = 1024
	muxProbeReplyMax = len(muxMagic) + 2 + MaxNodeIDBytes
	// muxProbeWriteTimeout bounds the answer: it fits in any socket buffer,
	// so only a peer that vanished makes the write wait at all.
	muxProbeWriteTimeout = time.Second
	// muxProbeMaxWait caps a probe whose context has no (or a far) deadline.
	muxProbeMaxWait = 10 * time.Second
)

var errMuxClosed = errors.New("raftmux: stream closed")

// Errors of ProbeIdentity; the error returned wraps one of them and says
// which address and what exactly happened.
var (
	// ErrUnreachable: nothing accepts connections at the address.
	ErrUnreachable = errors.New("nothing listens at the raft address")
	// ErrNotRaftPort: something listens but does not answer the probe as a
	// syncstore raft port does (another service, an older syncd that closes
	// the connection, or a garbled answer).
	ErrNotRaftPort = errors.New("not a syncstore raft port")
	// ErrProbeTimeout: no answer before the deadline (the caller's or
	// the probe's own cap). The error also wraps context.DeadlineExceeded.
	ErrProbeTimeout = errors.New("raft identity probe timed out")
	// ErrPeerTLS: the TLS handshake failed (a certificate from another
	// CA, or TLS against a plaintext port or the reverse).
	ErrPeerTLS = errors.New("peer TLS handshake failed")
)

// Mux is the shared Raft listener of a node.
type Mux struct {
	ln  net.Listener
	log *slog.Logger
	// serverTLS and clientTLS are nil for plaintext.
	serverTLS, clientTLS *tls.Config
	// probeReply is the whole answer to an identity probe, built once.
	probeReply []byte

	mu     sync.Mutex
	layers map[uint64]*muxLayer
	shake  *connSet // accepted connections still in their handshake
	closed bool
	done   chan struct{} // closed by Close: ends an accept backoff
	wg     sync.WaitGroup
	// handshakes counts handshake goroutines still running (tests wait on it).
	handshakes atomic.Int64
}

// Option changes a Mux made by Listen.
type Option func(*Mux)

// WithTLS makes every connection mutual TLS: server is the config of
// accepted connections, client of dialed ones (internal/certs' PeerServer
// and PeerClient). The TLS handshake runs before the mux header, under the
// same deadlines.
func WithTLS(server, client *tls.Config) Option {
	return func(m *Mux) { m.serverTLS, m.clientTLS = server, client }
}

// Listen listens on addr for the Raft traffic of all groups and answers
// identity probes with nodeID (at most MaxNodeIDBytes bytes).
func Listen(addr, nodeID string, log *slog.Logger, opts ...Option) (*Mux, error) {
	reply, err := appendProbeReply(nil, nodeID)
	if err != nil {
		return nil, fmt.Errorf("raftmux: listener on %s: %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("raftmux: listener on %s: %w", addr, err)
	}
	m := &Mux{ln: ln, log: log, probeReply: reply, layers: map[uint64]*muxLayer{}, shake: newConnSet(), done: make(chan struct{})}
	for _, o := range opts {
		o(m)
	}
	if m.serverTLS != nil {
		m.ln = tls.NewListener(ln, m.serverTLS)
	}
	m.wg.Add(1)
	go m.acceptLoop()
	return m, nil
}

// Addr is the shared Raft address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Layer returns the stream layer of one group. Each group id may have one
// layer at a time; closing it frees the id.
func (m *Mux) Layer(group uint64) (raft.StreamLayer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errMuxClosed
	}
	if group == ProbeGroup {
		return nil, fmt.Errorf("raftmux: group %d is reserved for the identity probe", group)
	}
	if _, ok := m.layers[group]; ok {
		return nil, fmt.Errorf("raftmux: group %d already has a raft stream", group)
	}
	l := &muxLayer{mux: m, group: group, accept: make(chan net.Conn, muxAcceptBacklog), done: make(chan struct{}), conns: newConnSet()}
	m.layers[group] = l
	return l, nil
}

// Close stops accepting and closes connections still in their handshake.
// Group layers are closed by their transports.
func (m *Mux) Close() error {
	m.mu.Lock()
	if !m.closed {
		close(m.done)
	}
	m.closed = true
	m.mu.Unlock()
	err := m.ln.Close()
	m.shake.closeAll()
	m.wg.Wait()
	return err
}

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors (a flood of connections) must not turn
			// into a busy loop: back off as net/http does, 5 ms up to 1 s.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.Warn("raft accept", "err", err, "retry_in", backoff)
			if !m.pause(backoff) {
				return
			}
			continue
		}
		backoff = 0
		if !m.serve(c) {
			return
		}
	}
}

// serve starts the handshake of an accepted connection; false (and c
// closed) once the Mux is closed.
func (m *Mux) serve(c net.Conn) bool {
	if !m.shake.add(c) {
		c.Close()
		return false
	}
	m.wg.Add(1)
	m.handshakes.Add(1)
	go m.handshake(c)
	return true
}

// pause waits d, or less if the Mux closes; false once it is closed.
func (m *Mux) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-m.done:
		return false
	}
}

func (m *Mux) handshake(c net.Conn) {
	defer m.wg.Done()
	defer m.handshakes.Add(-1)
	group, err := readHeader(c)
	if err == nil && group == ProbeGroup {
		// Answered while still tracked, so Close interrupts a stuck write.
		m.answerProbe(c)
		m.shake.forget(c)
		c.Close()
		return
	}
	m.shake.forget(c)
	if err != nil {
		m.log.Debug("raft handshake", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	m.mu.Lock()
	l := m.layers[group]
	m.mu.Unlock()
	if l == nil {
		c.Close() // a group this node does not (or no longer) host
		return
	}
	l.deliver(c)
}

// answerProbe writes this node's id. The write has a deadline, so a prober
// that never reads cannot hold the handshake goroutine.
func (m *Mux) answerProbe(c net.Conn) {
	err := c.SetWriteDeadline(time.Now().Add(muxProbeWriteTimeout))
	if err == nil {
		_, err = c.Write(m.probeReply)
	}
	if err != nil {
		m.log.Debug("raft identity probe", "remote", c.RemoteAddr().String(), "err", err)
	}
}

// readHeader reads the dialer's header under the handshake deadline.
func readHeader(c net.Conn) (uint64, error) {
	if err := c.SetReadDeadline(time.Now().Add(muxHandshakeTimeout)); err != nil {
		return 0, err
	}
	var h [muxHeaderLen]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, err
	}
	group, err := parseMuxHeader(h[:])
	if err != nil {
		return 0, err
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return 0, err
	}
	return group, nil
}

var errMuxShortHeader = errors.New("short raft stream header")

// parseMuxHeader reads the group id from the first muxHeaderLen bytes of b
// (the bytes after them belong to the group's stream). It is pure, so the
// fuzzer drives it without sockets.
func parseMuxHeader(b []byte) (uint64, error) {
	if len(b) < muxHeaderLen {
		return 0, fmt.Errorf("%w: %d bytes", errMuxShortHeader, len(b))
	}
	if string(b[:len(muxMagic)]) != muxMagic {
		return 0, fmt.Errorf("bad magic %q", b[:len(muxMagic)])
	}
	return binary.BigEndian.Uint64(b[len(muxMagic):muxHeaderLen]), nil
}

// appendMuxHeader appends the header naming group.
func appendMuxHeader(b []byte, group uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, muxMagic...), group)
}

// appendProbeReply appends the answer to an identity probe.
func appendProbeReply(b []byte, nodeID string) ([]byte, error) {
	if len(nodeID) > MaxNodeIDBytes {
		return nil, fmt.Errorf("node id of %d bytes is longer than %d", len(nodeID), MaxNodeIDBytes)
	}
	b = binary.BigEndian.AppendUint16(append(b, muxMagic...), uint16(len(nodeID)))
	return append(b, nodeID...), nil
}

// readProbeReply reads an answer to an identity probe from r, at most
// muxProbeReplyMax bytes whatever r holds. Errors that are not r's own wrap
// ErrNotRaftPort.
func readProbeReply(r io.Reader) (string, error) {
	var h [len(muxMagic) + 2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return "", fmt.Errorf("%w: closed after %s", ErrNotRaftPort, answerSoFar(err))
		}
		return "", err
	}
	if string(h[:len(muxMagic)]) != muxMagic {
		return "", fmt.Errorf("%w: answered %q", ErrNotRaftPort, h[:])
	}
	n := int(binary.BigEndian.Uint16(h[len(muxMagic):]))
	if n > MaxNodeIDBytes {
		return "", fmt.Errorf("%w: node id of %d bytes (at most %d)", ErrNotRaftPort, n, MaxNodeIDBytes)
	}
	id := make([]byte, n)
	if _, err := io.ReadFull(r, id); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return "", fmt.Errorf("%w: node id cut short", ErrNotRaftPort)
		}
		return "", err
	}
	return string(id), nil
}

func answerSoFar(err error) string {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "a partial answer"
	}
	return "no answer (an older syncd, or another service)"
}

// ProbeIdentity asks the Mux at addr which node it belongs to: it dials,
// sends the probe header, reads the id and closes, all within ctx and at
// most muxProbeMaxWait. The id is empty if that Mux was started with an
// empty one. Errors wrap ErrUnreachable, ErrNotRaftPort or
// ErrProbeTimeout (and context.DeadlineExceeded); a cancelled ctx gives
// an error wrapping context.Canceled.
// With clientTLS (peer TLS) the probe runs over TLS.
func ProbeIdentity(ctx context.Context, addr string, clientTLS *tls.Config) (nodeID string, err error) {
	ctx, cancel := context.WithTimeout(ctx, muxProbeMaxWait)
	defer cancel()
	defer func() {
		if err != nil {
			err = fmt.Errorf("raftmux: identity probe of %s: %w", addr, err)
		}
	}()
	c, err := dial(ctx, addr, clientTLS)
	if err != nil {
		return "", classifyProbeErr(ctx, err, true)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline() // always set: WithTimeout above
	if err := c.SetDeadline(deadline); err != nil {
		return "", err
	}
	// A cancelled (not just expired) context must also interrupt the read.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(appendMuxHeader(nil, ProbeGroup)); err != nil {
		return "", classifyProbeErr(ctx, err, false)
	}
	id, err := readProbeReply(c)
	if err != nil {
		return "", classifyProbeErr(ctx, err, false)
	}
	return id, nil
}

// classifyProbeErr wraps a dial, write or read error of a probe in the
// sentinel that says what it means.
func classifyProbeErr(ctx context.Context, err error, dialing bool) error {
	switch {
	case errors.Is(err, ErrNotRaftPort):
		return err
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("cancelled: %w", ctx.Err())
	case ctx.Err() != nil, errors.Is(err, os.ErrDeadlineExceeded):
		// The connection's deadline is ctx's: either may be seen first.
		return fmt.Errorf("%w: %w", ErrProbeTimeout, context.DeadlineExceeded)
	case errors.Is(err, ErrPeerTLS):
		return err
	case isTLSError(err):
		return fmt.Errorf("%w: %w", ErrPeerTLS, err)
	case dialing:
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		// Reset without an answer: whatever listens did not speak our protocol.
		return fmt.Errorf("%w: %w", ErrNotRaftPort, err)
	}
	return err
}

// isTLSError reports whether err came from a TLS handshake.
func isTLSError(err error) bool {
	var rh tls.RecordHeaderError
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &rh) || errors.As(err, &alert) || errors.As(err, &verify) || strings.Contains(err.Error(), "tls: ")
}

func (m *Mux) remove(group uint64, l *muxLayer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.layers[group] == l {
		delete(m.layers, group)
	}
}

// muxLayer is one group's raft.StreamLayer on a Mux.
type muxLayer struct {
	mux    *Mux
	group  uint64
	accept chan net.Conn
	done   chan struct{}
	once   sync.Once
	conns  *connSet
}

func (l *muxLayer) deliver(c net.Conn) {
	if !l.conns.add(c) {
		c.Close()
		return
	}
	select {
	case l.accept <- &trackedConn{Conn: c, set: l.conns}:
	case <-l.done:
		c.Close()
	}
}

func (l *muxLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, errMuxClosed
	}
}

func (l *muxLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := dial(ctx, string(addr), l.mux.clientTLS)
	if err != nil {
		return nil, err
	}
	h := appendMuxHeader(make([]byte, 0, muxHeaderLen), l.group)
	if err := c.SetWriteDeadline(time.Now().Add(timeout)); err == nil {
		_, err = c.Write(h)
	}
	if err == nil {
		err = c.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("raftmux: handshake with %s: %w", addr, err)
	}
	if !l.conns.add(c) {
		c.Close()
		return nil, errMuxClosed
	}
	return &trackedConn{Conn: c, set: l.conns}, nil
}

// dial connects to a Mux, with its TLS handshake done when clientTLS is
// set; a failed handshake wraps ErrPeerTLS.
func dial(ctx context.Context, addr string, clientTLS *tls.Config) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil || clientTLS == nil {
		return c, err
	}
	tc := tls.Client(c, clientTLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w with %s: %w", ErrPeerTLS, addr, err)
	}
	return tc, nil
}

func (l *muxLayer) Addr() net.Addr { return l.mux.Addr() }

// Close closes every connection of the group, accepted or dialed: Raft's
// transport only closes its listener, which would leave handler goroutines
// blocked on connections from peers that live on.
func (l *muxLayer) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.mux.remove(l.group, l)
		l.conns.closeAll()
	})
	return nil
}

// connSet tracks open connections so they can all be closed at once.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newConnSet() *connSet { return &connSet{conns: map[net.Conn]struct{}{}} }

// add tracks c; false once the set is closed.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) forget(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	clear(s.conns)
}

type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.set.forget(c.Conn) })
	return c.Conn.Close()
}
