package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/internal/certs"
)

// Identity is who a call comes from.
type Identity struct {
	Name string
	Role Role
	Via  string // "token", "certificate" or "peer"
}

// Config says how callers are identified.
type Config struct {
	// Tokens, when set, accepts bearer tokens from this file.
	Tokens *Tokens
	// ClientCerts accepts client certificates (verified by the TLS layer
	// against --client-ca) as identities: name in the CN, role in the OU.
	ClientCerts bool
	// PeerTLS: peers are told apart by peer mutual TLS, so peer-only
	// methods refuse everyone else. Without it (a plaintext cluster run
	// with --insecure, or the loopback quickstart) they are open.
	PeerTLS bool
}

// Authorizer checks every call against the method table.
type Authorizer struct {
	cfg     Config
	refused *prometheus.CounterVec
}

// New returns an Authorizer.
func New(cfg Config) *Authorizer {
	return &Authorizer{cfg: cfg, refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "syncstore_auth_refused_total",
		Help: "Calls refused by authentication (code unauthenticated) or authorization (code permission_denied), by service.",
	}, []string{"code", "service"})}
}

// Collector is the refusal counter, for a Prometheus registry.
func (a *Authorizer) Collector() prometheus.Collector { return a.refused }

// ClientAuth reports whether clients must authenticate.
func (a *Authorizer) ClientAuth() bool { return a.cfg.Tokens != nil || a.cfg.ClientCerts }

type identityKey struct{}

// FromContext is the identity an authorized call was made with; ok is false
// when authentication is off.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Unary is the unary server interceptor.
func (a *Authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Stream is the stream server interceptor.
func (a *Authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &identifiedStream{ServerStream: ss, ctx: ctx})
}

type identifiedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identifiedStream) Context() context.Context { return s.ctx }

func (a *Authorizer) authorize(ctx context.Context, method string) (context.Context, error) {
	need := accessOf(method)
	if need == open {
		return ctx, nil
	}
	state, hasTLS := tlsState(ctx)
	if hasTLS && certs.IsPeer(state) {
		return context.WithValue(ctx, identityKey{}, Identity{Name: state.PeerCertificates[0].Subject.CommonName, Role: rolePeer, Via: "peer"}), nil
	}
	if need == peerOnly && a.cfg.PeerTLS {
		return ctx, a.refuse(codes.PermissionDenied, method, "%s is for cluster nodes only: it needs a peer certificate from the peer CA", method)
	}
	if !a.ClientAuth() {
		return ctx, nil
	}
	id, err := a.identify(ctx, state, hasTLS)
	if err != nil {
		return ctx, a.refuse(codes.Unauthenticated, method, "%s", err)
	}
	if !id.Role.grants(need) {
		return ctx, a.refuse(codes.PermissionDenied, method, "%s %q has role %s; %s needs %s", id.Via, id.Name, id.Role, method, need)
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

// identify finds the caller: a token when one is sent (a bad one is never
// overridden by a certificate), else a client certificate.
func (a *Authorizer) identify(ctx context.Context, state tls.ConnectionState, hasTLS bool) (Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get("authorization"); len(vals) > 0 {
		token, ok := strings.CutPrefix(vals[0], "Bearer ")
		if !ok || token == "" {
			return Identity{}, errors.New(`authorization metadata must be "Bearer <token>"`)
		}
		if a.cfg.Tokens == nil {
			return Identity{}, errors.New("this node accepts no tokens (no --token-file); use a client certificate")
		}
		id, ok := a.cfg.Tokens.lookup(token)
		if !ok {
			return Identity{}, errors.New("unknown token")
		}
		return id, nil
	}
	if a.cfg.ClientCerts && hasTLS && len(state.PeerCertificates) > 0 {
		c := state.PeerCertificates[0]
		if len(c.Subject.OrganizationalUnit) == 0 {
			return Identity{}, fmt.Errorf("client certificate %q names no role (OU app, reader or admin)", c.Subject.CommonName)
		}
		role, ok := ParseRole(c.Subject.OrganizationalUnit[0])
		if !ok {
			return Identity{}, fmt.Errorf("client certificate %q has OU %q: want app, reader or admin", c.Subject.CommonName, c.Subject.OrganizationalUnit[0])
		}
		return Identity{Name: c.Subject.CommonName, Role: role, Via: "certificate"}, nil
	}
	return Identity{}, errors.New("no credentials: send a bearer token (authorization: Bearer <token>) or a client certificate")
}

func (a *Authorizer) refuse(code codes.Code, method, format string, args ...any) error {
	label := "unauthenticated"
	if code == codes.PermissionDenied {
		label = "permission_denied"
	}
	a.refused.WithLabelValues(label, serviceOf(method)).Inc()
	return status.Errorf(code, format, args...)
}

func tlsState(ctx context.Context) (tls.ConnectionState, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return tls.ConnectionState{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return tls.ConnectionState{}, false
	}
	return info.State, true
}

// serviceOf is "syncstore.v1.Sync" of "/syncstore.v1.Sync/Append".
func serviceOf(method string) string {
	s := strings.TrimPrefix(method, "/")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i]
	}
	return s
}
