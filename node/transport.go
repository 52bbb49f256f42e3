package node

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is the TCP stream layer under Raft's NetworkTransport. Unlike
// the stock one it remembers every connection it accepted or dialed and
// closes them all on Close: the stock transport only closes its listener,
// leaving handler goroutines blocked on connections from peers that live on.
type streamLayer struct {
	ln net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func listenStream(addr string) (*streamLayer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &streamLayer{ln: ln, conns: map[net.Conn]struct{}{}}, nil
}

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

func (s *streamLayer) Addr() net.Addr { return s.ln.Addr() }

func (s *streamLayer) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	return err
}

var errStreamClosed = errors.New("node: raft stream layer closed")

func (s *streamLayer) track(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, errStreamClosed
	}
	s.conns[c] = struct{}{}
	return &trackedConn{Conn: c, layer: s}, nil
}

func (s *streamLayer) forget(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

type trackedConn struct {
	net.Conn
	layer *streamLayer
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.layer.forget(c.Conn) })
	return c.Conn.Close()
}
