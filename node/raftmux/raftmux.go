// Package raftmux lets every Raft group a node hosts share one TCP port: a
// dialer names the group (and its cluster) in a short header and the
// listener hands the connection to that group's raft.StreamLayer, or
// closes it when it comes from another cluster. It also answers an
// identity probe, so a node handling a Join can check that a Raft address
// belongs to the node that claims it. See DESIGN.md.
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
// reads it and hands the connection to that group's transport. Two header
// versions:
//
//	v1: "SSR1" + group (8 bytes, big-endian)                      a dialer with no cluster id
//	v2: "SSR2" + group (8 bytes) + id length (1 byte, 1..64) + id  a dialer of that cluster
//
// A dialer with no cluster id yet sends v1, which binaries older than
// cluster ids also send and understand, so a cluster made before them keeps
// working through a rolling upgrade until it gets an id.
//
// One group id is reserved for the identity probe: a dialer that names
// ProbeGroup (in either version, whatever its cluster) is answered with
// "SSR1", a 2-byte big-endian length and this node's id, and the connection
// is closed. A node handling a join uses it to check that the Raft address a
// newcomer gave is really that node's.
const (
	muxMagic            = "SSR1"
	muxMagicV2          = "SSR2"
	muxHeaderLen        = len(muxMagic) + 8
	muxHeaderV2Min      = muxHeaderLen + 1
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
	// MaxClusterIDBytes bounds the cluster id a v2 header carries (its
	// length is one byte); fsm.MaxClusterIDBytes is the same bound.
	MaxClusterIDBytes = 64
	// refusedWarnEvery spaces the warnings about refused connections: a
	// node of another cluster retries its dials many times a second.
	refusedWarnEvery = 10 * time.Second
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

	// clusterMu guards clusterID and adopt: the cluster this node is of
	// ("" before it knows one), and, on a node waiting to be joined, the
	// callback that records the id it adopts from its first connection.
	clusterMu sync.Mutex
	clusterID string
	adopt     func(clusterID string)
	// refused counts connections closed for coming from another cluster;
	// lastWarn (Unix nanoseconds) rate-limits the warnings about them.
	refused  atomic.Uint64
	lastWarn atomic.Int64
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

// WithClusterID makes the mux one of cluster id's: its dials carry the id
// (a v2 header) and it closes group connections that carry another id or
// none. Without it (or with "") the mux accepts every connection until
// SetClusterID or an adoption (WithAdoption) gives it an id.
func WithClusterID(id string) Option {
	return func(m *Mux) { m.clusterID = id }
}

// WithAdoption is for a node that waits to be joined, with an empty data
// dir: while the mux has no cluster id, the first group connection that
// carries one gives the mux that id (from then on it refuses others) and
// fn is called with it, once, before the connection is handed over. The
// cluster it asked to join is the only one that knows its address, and
// its leader dials it first.
func WithAdoption(fn func(clusterID string)) Option {
	return func(m *Mux) { m.adopt = fn }
}

// Listen listens on addr for the Raft traffic of all groups and answers
// identity probes with nodeID (at most MaxNodeIDBytes bytes).
func Listen(addr, nodeID string, log *slog.Logger, opts ...Option) (*Mux, error) {
	reply, err := appendProbeReply(nil, nodeID)
	if err != nil {
		return nil, fmt.Errorf("raftmux: listener on %s: %w", addr, err)
	}
	m := &Mux{log: log, probeReply: reply, layers: map[uint64]*muxLayer{}, shake: newConnSet(), done: make(chan struct{})}
	for _, o := range opts {
		o(m)
	}
	if len(m.clusterID) > MaxClusterIDBytes {
		return nil, fmt.Errorf("raftmux: listener on %s: cluster id of %d bytes is longer than %d", addr, len(m.clusterID), MaxClusterIDBytes)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("raftmux: listener on %s: %w", addr, err)
	}
	m.ln = ln
	if m.serverTLS != nil {
		m.ln = tls.NewListener(ln, m.serverTLS)
	}
	m.wg.Add(1)
	go m.acceptLoop()
	return m, nil
}

// Addr is the shared Raft address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// ClusterID is the cluster this mux belongs to, "" while it has none.
func (m *Mux) ClusterID() string {
	m.clusterMu.Lock()
	defer m.clusterMu.Unlock()
	return m.clusterID
}

// SetClusterID gives a mux without a cluster id one (a node that learnt
// its cluster's id from the meta group or a join's answer). Setting the id
// it has is a no-op; another id is refused: a node never changes cluster.
func (m *Mux) SetClusterID(id string) error {
	if id == "" || len(id) > MaxClusterIDBytes {
		return fmt.Errorf("raftmux: cluster id of %d bytes: want 1 to %d", len(id), MaxClusterIDBytes)
	}
	m.clusterMu.Lock()
	defer m.clusterMu.Unlock()
	if m.clusterID != "" && m.clusterID != id {
		return fmt.Errorf("raftmux: this node is of cluster %s, not %s", m.clusterID, id)
	}
	m.clusterID = id
	return nil
}

// RefusedForeign counts the group connections closed because they came
// from another cluster (or, once this mux has an id, from none).
func (m *Mux) RefusedForeign() uint64 { return m.refused.Load() }

// admit decides on a group connection whose dialer is of cluster dialer
// ("" for none): the same cluster passes; a mux without an id takes
// anyone, and with an adoption callback takes the dialer's id as its own.
func (m *Mux) admit(dialer string) bool {
	m.clusterMu.Lock()
	own, adopt := m.clusterID, m.adopt
	switch {
	case own == dialer:
		m.clusterMu.Unlock()
		return true
	case own != "":
		m.clusterMu.Unlock()
		return false
	}
	if dialer == "" || adopt == nil {
		m.clusterMu.Unlock()
		return true
	}
	m.clusterID, m.adopt = dialer, nil
	m.clusterMu.Unlock()
	m.log.Info("adopted the cluster id of the first raft connection", "cluster_id", dialer)
	adopt(dialer)
	return true
}

// refuse closes a connection from another cluster, counted, and says so
// at most every refusedWarnEvery (the dialer retries).
func (m *Mux) refuse(c net.Conn, group uint64, dialer string) {
	m.refused.Add(1)
	c.Close()
	now := time.Now().UnixNano()
	last := m.lastWarn.Load()
	attrs := []any{"remote", c.RemoteAddr().String(), "group", group, "their_cluster_id", dialer, "cluster_id", m.ClusterID()}
	if now-last >= int64(refusedWarnEvery) && m.lastWarn.CompareAndSwap(last, now) {
		m.log.Warn("refused a raft connection from a node of another cluster (a restored cluster, or a node pointed at the wrong one)", attrs...)
		return
	}
	m.log.Debug("refused a raft connection from another cluster", attrs...)
}

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
	h, err := readHeader(c)
	group := h.group
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
	if !m.admit(h.clusterID) {
		m.refuse(c, group, h.clusterID)
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

// muxHeader is what a dialer's header says: the group, and the dialer's
// cluster ("" in a v1 header).
type muxHeader struct {
	group     uint64
	clusterID string
}

// readHeader reads the dialer's header under the handshake deadline: the
// fixed part, then, for v2, the id's length and the id.
func readHeader(c net.Conn) (muxHeader, error) {
	if err := c.SetReadDeadline(time.Now().Add(muxHandshakeTimeout)); err != nil {
		return muxHeader{}, err
	}
	buf := make([]byte, muxHeaderV2Min, muxHeaderV2Min+MaxClusterIDBytes)
	if _, err := io.ReadFull(c, buf[:muxHeaderLen]); err != nil {
		return muxHeader{}, err
	}
	buf = buf[:muxHeaderLen]
	if string(buf[:len(muxMagicV2)]) == muxMagicV2 {
		buf = buf[:muxHeaderV2Min]
		if _, err := io.ReadFull(c, buf[muxHeaderLen:]); err != nil {
			return muxHeader{}, err
		}
		n := int(buf[muxHeaderLen])
		if n == 0 || n > MaxClusterIDBytes {
			return muxHeader{}, fmt.Errorf("raft stream header: cluster id of %d bytes (1 to %d)", n, MaxClusterIDBytes)
		}
		buf = buf[:muxHeaderV2Min+n]
		if _, err := io.ReadFull(c, buf[muxHeaderV2Min:]); err != nil {
			return muxHeader{}, err
		}
	}
	h, _, err := parseMuxHeader(buf)
	if err != nil {
		return muxHeader{}, err
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return muxHeader{}, err
	}
	return h, nil
}

var errMuxShortHeader = errors.New("short raft stream header")

// parseMuxHeader reads a v1 or v2 header from the start of b and returns
// how many bytes it took (the bytes after them belong to the group's
// stream). It is pure, so the fuzzer drives it without sockets.
func parseMuxHeader(b []byte) (muxHeader, int, error) {
	if len(b) < muxHeaderLen {
		return muxHeader{}, 0, fmt.Errorf("%w: %d bytes", errMuxShortHeader, len(b))
	}
	h := muxHeader{group: binary.BigEndian.Uint64(b[len(muxMagic):muxHeaderLen])}
	switch string(b[:len(muxMagic)]) {
	case muxMagic:
		return h, muxHeaderLen, nil
	case muxMagicV2:
	default:
		return muxHeader{}, 0, fmt.Errorf("bad magic %q", b[:len(muxMagic)])
	}
	if len(b) < muxHeaderV2Min {
		return muxHeader{}, 0, fmt.Errorf("%w: %d bytes of a v2 header", errMuxShortHeader, len(b))
	}
	n := int(b[muxHeaderLen])
	if n == 0 || n > MaxClusterIDBytes {
		return muxHeader{}, 0, fmt.Errorf("v2 header: cluster id of %d bytes (1 to %d)", n, MaxClusterIDBytes)
	}
	if len(b) < muxHeaderV2Min+n {
		return muxHeader{}, 0, fmt.Errorf("%w: %d bytes of a v2 header with a %d-byte cluster id", errMuxShortHeader, len(b), n)
	}
	h.clusterID = string(b[muxHeaderV2Min : muxHeaderV2Min+n])
	return h, muxHeaderV2Min + n, nil
}

// appendMuxHeader appends the header naming group: v1 without a cluster
// id, else v2 (clusterID at most MaxClusterIDBytes bytes: Listen and
// SetClusterID check).
func appendMuxHeader(b []byte, group uint64, clusterID string) []byte {
	if clusterID == "" {
		return binary.BigEndian.AppendUint64(append(b, muxMagic...), group)
	}
	b = binary.BigEndian.AppendUint64(append(b, muxMagicV2...), group)
	return append(append(b, byte(len(clusterID))), clusterID...)
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
	// v1: the probe is answered whatever the cluster, by older binaries too.
	if _, err := c.Write(appendMuxHeader(nil, ProbeGroup, "")); err != nil {
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
	h := appendMuxHeader(make([]byte, 0, muxHeaderV2Min+MaxClusterIDBytes), l.group, l.mux.ClusterID())
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
