package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The Raft traffic of every group on a node shares one TCP port. A dialer
// opens each connection with a header naming the group; the listening side
// reads it and hands the connection to that group's transport.
const (
	muxMagic            = "SSR1"
	muxHeaderLen        = len(muxMagic) + 8
	muxHandshakeTimeout = 5 * time.Second
	muxAcceptBacklog    = 16
)

var errMuxClosed = errors.New("node: raft stream closed")

// Mux is the shared Raft listener of a node.
type Mux struct {
	ln  net.Listener
	log *slog.Logger

	mu     sync.Mutex
	layers map[uint64]*muxLayer
	shake  *connSet // accepted connections still in their handshake
	closed bool
	wg     sync.WaitGroup
}

// ListenMux listens on addr for the Raft traffic of all groups.
func ListenMux(addr string, log *slog.Logger) (*Mux, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("node: raft listener on %s: %w", addr, err)
	}
	m := &Mux{ln: ln, log: log, layers: map[uint64]*muxLayer{}, shake: newConnSet()}
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
	if _, ok := m.layers[group]; ok {
		return nil, fmt.Errorf("node: group %d already has a raft stream", group)
	}
	l := &muxLayer{mux: m, group: group, accept: make(chan net.Conn, muxAcceptBacklog), done: make(chan struct{}), conns: newConnSet()}
	m.layers[group] = l
	return l, nil
}

// Close stops accepting and closes connections still in their handshake.
// Group layers are closed by their transports.
func (m *Mux) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	err := m.ln.Close()
	m.shake.closeAll()
	m.wg.Wait()
	return err
}

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("raft accept", "err", err)
			continue
		}
		if !m.shake.add(c) {
			c.Close()
			return
		}
		m.wg.Add(1)
		go m.handshake(c)
	}
}

func (m *Mux) handshake(c net.Conn) {
	defer m.wg.Done()
	group, err := readHeader(c)
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

func readHeader(c net.Conn) (uint64, error) {
	if err := c.SetReadDeadline(time.Now().Add(muxHandshakeTimeout)); err != nil {
		return 0, err
	}
	var h [muxHeaderLen]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, err
	}
	if string(h[:len(muxMagic)]) != muxMagic {
		return 0, fmt.Errorf("bad magic %q", h[:len(muxMagic)])
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(h[len(muxMagic):]), nil
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
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	var h [muxHeaderLen]byte
	copy(h[:], muxMagic)
	binary.BigEndian.PutUint64(h[len(muxMagic):], l.group)
	if err := c.SetWriteDeadline(time.Now().Add(timeout)); err == nil {
		_, err = c.Write(h[:])
	}
	if err == nil {
		err = c.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("node: raft handshake with %s: %w", addr, err)
	}
	if !l.conns.add(c) {
		c.Close()
		return nil, errMuxClosed
	}
	return &trackedConn{Conn: c, set: l.conns}, nil
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
