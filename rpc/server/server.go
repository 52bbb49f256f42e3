// Package server exposes a node over gRPC: the Sync API for app servers, the
// Admin API for operators and joining nodes, grpc.health.v1 and server
// reflection. A request that needs the leader is forwarded to it (one hop at
// most); when the leader cannot be reached the answer is UNAVAILABLE with a
// NotLeader detail the Go client follows.
package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"

	"github.com/syncstore/syncstore/internal/certs"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/auth"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

const (
	// forwardedHeader marks a request a node forwarded to the leader, so the
	// leader never forwards it again (one hop at most).
	forwardedHeader = "syncstore-forwarded-by"
	// messageOverhead is what a request may add around its payload (ids,
	// idempotency key, metadata) within the gRPC message size limit.
	messageOverhead = 1 << 20
	// peerCallTimeout bounds a status or catch-up call to another node.
	peerCallTimeout = 2 * time.Second
	// stopGrace is how long Stop lets in-flight calls finish.
	stopGrace = 5 * time.Second
)

// Server serves one node.
type Server struct {
	syncv1.UnimplementedSyncServer
	syncv1.UnimplementedAdminServer
	syncv1.UnimplementedPeerServer

	node         *node.Node
	log          *slog.Logger
	grpc         *grpc.Server
	health       *health.Server
	peers        *peers
	streamLimits StreamLimits
	metrics      *serverMetrics
	// stopping is closed when Stop or Kill begins: Subscribe streams end at
	// once (UNAVAILABLE), as a graceful stop would otherwise wait for them.
	stopping chan struct{}
	stopOnce sync.Once
	tls      *certs.Node
	auth     *auth.Authorizer

	readyMu     sync.Mutex
	ready       bool
	readyReason string
	readySet    bool
	loopOnce    sync.Once
	loops       sync.WaitGroup
}

// Option changes a Server built by New.
type Option func(*Server)

// WithStreamLimits sets the limits of Subscribe streams.
func WithStreamLimits(l StreamLimits) Option { return func(s *Server) { s.streamLimits = l } }

// WithTLS serves TLS with the node's certificates: the server certificate
// to clients, the peer certificate and mutual TLS to peers (internal/certs),
// and dials peers (forwarding, joins) with peer TLS.
func WithTLS(c *certs.Node) Option { return func(s *Server) { s.tls = c } }

// WithAuthorizer checks every call's credentials and role (rpc/auth).
func WithAuthorizer(a *auth.Authorizer) Option { return func(s *Server) { s.auth = a } }

// readinessEvery is how often the health service follows the node's
// readiness.
const readinessEvery = 250 * time.Millisecond

// New builds the gRPC server of a node.
func New(n *node.Node, log *slog.Logger, opts ...Option) *Server {
	s := &Server{
		node:         n,
		log:          log,
		health:       health.NewServer(),
		streamLimits: DefaultStreamLimits(),
		metrics:      newServerMetrics(),
		stopping:     make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	unary := []grpc.UnaryServerInterceptor{rejectUndecodableUnary}
	stream := []grpc.StreamServerInterceptor{rejectUndecodableStream}
	if s.auth != nil {
		// First: a caller who may not call a method learns nothing else.
		unary = append([]grpc.UnaryServerInterceptor{s.auth.Unary}, unary...)
		stream = append([]grpc.StreamServerInterceptor{s.auth.Stream}, stream...)
	}
	gopts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(n.Config().MaxPayloadBytes + messageOverhead),
		// A body that does not decode: INVALID_ARGUMENT, not INTERNAL (codec.go).
		grpc.ForceServerCodecV2(newDecodeCodec()),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}
	var peerTLS *tls.Config
	if s.tls != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(s.tls.GRPCServer())))
		peerTLS = s.tls.PeerClient()
	}
	s.peers = newPeers(peerTLS)
	s.grpc = grpc.NewServer(gopts...)
	syncv1.RegisterSyncServer(s.grpc, s)
	syncv1.RegisterAdminServer(s.grpc, s)
	syncv1.RegisterPeerServer(s.grpc, s)
	syncv1.RegisterRecordsServer(s.grpc, &records{s: s})
	syncv1.RegisterDevicesServer(s.grpc, &devices{s: s})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.followReadiness() // NOT_SERVING until the node says it is ready
	return s
}

// followReadiness sets the health status from the node's readiness and
// logs each change.
func (s *Server) followReadiness() {
	ready, reason := s.node.Readiness()
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ready {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.readyMu.Lock()
	changed := s.readySet && s.ready != ready
	s.ready, s.readyReason, s.readySet = ready, reason, true
	s.readyMu.Unlock()
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(syncv1.Sync_ServiceDesc.ServiceName, st)
	if changed {
		if ready {
			s.log.Info("health: serving")
		} else {
			s.log.Warn("health: not serving", "reason", reason)
		}
	}
}

// Ready is the readiness the health service last reported, with the
// reason when not ready (for /readyz).
func (s *Server) Ready() (bool, string) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	return s.ready, s.readyReason
}

func (s *Server) readinessLoop() {
	defer s.loops.Done()
	t := time.NewTicker(readinessEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopping:
			return
		case <-t.C:
			s.followReadiness()
		}
	}
}

// Serve accepts connections on lis until Stop.
func (s *Server) Serve(lis net.Listener) error {
	s.loopOnce.Do(func() {
		s.loops.Add(1)
		go s.readinessLoop()
	})
	if err := s.grpc.Serve(lis); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// Stop reports NOT_SERVING, lets in-flight calls finish for a short grace
// period, then closes every connection.
func (s *Server) Stop() {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(stopGrace):
		s.grpc.Stop()
		<-done
	}
	s.peers.close()
	s.loops.Wait()
}

// Kill closes every connection at once, failing the calls in flight.
func (s *Server) Kill() {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.health.Shutdown()
	s.grpc.Stop()
	s.peers.close()
	s.loops.Wait()
}

func forwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(forwardedHeader)) > 0
}

// leaderConn returns a connection to the leader for forwarding err's request,
// or ok=false when err is no not-leader error, the request was already
// forwarded once, or the leader is unknown.
func (s *Server) leaderConn(ctx context.Context, err error) (context.Context, *grpc.ClientConn, *node.NotLeaderError, bool) {
	nl, isNL := asNotLeader(err)
	if !isNL || nl.LeaderGRPCAddr == "" || nl.LeaderID == s.node.ID() || forwarded(ctx) {
		return ctx, nil, nil, false
	}
	conn, cerr := s.peers.conn(nl.LeaderGRPCAddr)
	if cerr != nil {
		return ctx, nil, nil, false
	}
	return markForwarded(ctx, s.node.ID()), conn, nl, true
}

// markForwarded marks an outgoing call as forwarded by this node, so the
// receiver serves it or fails, never forwards it again.
func markForwarded(ctx context.Context, self string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedHeader, self)
}
