package server

import (
	"crypto/tls"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// peers keeps one client connection per other node, for forwarding and
// status calls.
type peers struct {
	creds  credentials.TransportCredentials
	tls    *tls.Config // nil: plaintext
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// newPeers dials with peer TLS, or in plaintext when tlsCfg is nil.
func newPeers(tlsCfg *tls.Config) *peers {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	return &peers{creds: creds, tls: tlsCfg, conns: map[string]*grpc.ClientConn{}}
}

func (p *peers) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("server: shutting down")
	}
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(p.creds))
	if err != nil {
		return nil, fmt.Errorf("server: dial %s: %w", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
