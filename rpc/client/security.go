package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// bearer sends a token on every call as "authorization: Bearer <token>",
// the metadata a node's auth reads.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity: grpc refuses to send the token over plaintext.
func (bearer) RequireTransportSecurity() bool { return true }

// checkSecurity refuses options that would fail on every call.
func checkSecurity(o Options) error {
	if o.Token == "" {
		return nil
	}
	if o.TLS == nil {
		return newError(codes.InvalidArgument, nil, "client: a Token needs TLS: it is never sent over plaintext")
	}
	for _, r := range o.Token {
		if r < 0x21 || r > 0x7e { // what a metadata value and "Bearer <token>" allow
			return newError(codes.InvalidArgument, nil, "client: the Token holds %q: only printable ASCII without spaces", r)
		}
	}
	return nil
}

// dialOptions are the client's own dial options, then Options.DialOptions.
func (o Options) dialOptions() []grpc.DialOption {
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = credentials.NewTLS(o.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.MaxRecvBytes)),
	}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(o.Token)))
	}
	return append(opts, o.DialOptions...)
}

// LoadTLS builds the TLS config of a client from PEM files: the CA that
// signed the nodes' certificates (caFile; "" trusts the system's roots),
// and a client certificate and key for mutual TLS (both or neither).
// serverName overrides the name checked in the nodes' certificates; ""
// checks the host of each address dialed.
func LoadTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("client: read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client: CA file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case certFile == "" && keyFile == "":
	case certFile == "" || keyFile == "":
		return nil, fmt.Errorf("client: a client certificate needs both its certificate and its key file (got cert %q, key %q)", certFile, keyFile)
	default:
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client: load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
