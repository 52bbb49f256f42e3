// Package server exposes a node over gRPC: the Sync API for app servers, the
// Admin API for operators and joining nodes, grpc.health.v1 and server
// reflection. A request that needs the leader is forwarded to it (one hop at
// most); when the leader cannot be reached the answer is UNAVAILABLE with a
// NotLeader detail the Go client follows.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"

	"github.com/syncstore/syncstore/node"
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
}

// Option changes a Server built by New.
type Option func(*Server)

// WithStreamLimits sets the limits of Subscribe streams.
func WithStreamLimits(l StreamLimits) Option { return func(s *Server) { s.streamLimits = l } }

// New builds the gRPC server of a node.
func New(n *node.Node, log *slog.Logger, opts ...Option) *Server {
	s := &Server{
		node:         n,
		log:          log,
		health:       health.NewServer(),
		peers:        newPeers(),
		streamLimits: DefaultStreamLimits(),
		metrics:      newServerMetrics(),
		stopping:     make(chan struct{}),
		grpc: grpc.NewServer(
			grpc.MaxRecvMsgSize(n.Config().MaxPayloadBytes+messageOverhead),
			// A body that does not decode: INVALID_ARGUMENT, not INTERNAL (codec.go).
			grpc.ForceServerCodecV2(newDecodeCodec()),
			grpc.ChainUnaryInterceptor(rejectUndecodableUnary),
			grpc.ChainStreamInterceptor(rejectUndecodableStream),
		),
	}
	for _, o := range opts {
		o(s)
	}
	syncv1.RegisterSyncServer(s.grpc, s)
	syncv1.RegisterAdminServer(s.grpc, s)
	syncv1.RegisterPeerServer(s.grpc, s)
	syncv1.RegisterRecordsServer(s.grpc, &records{s: s})
	syncv1.RegisterDevicesServer(s.grpc, &devices{s: s})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(syncv1.Sync_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// Serve accepts connections on lis until Stop.
func (s *Server) Serve(lis net.Listener) error {
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
}

// Kill closes every connection at once, failing the calls in flight.
func (s *Server) Kill() {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.health.Shutdown()
	s.grpc.Stop()
	s.peers.close()
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
