package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/auth"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// serveWith serves f with server options (TLS, interceptors).
func serveWith(t *testing.T, f syncv1.SyncServer, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	syncv1.RegisterSyncServer(s, f)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func appendOK() *fakeSync {
	return &fakeSync{answer: func(int) (*syncv1.AppendResponse, error) { return &syncv1.AppendResponse{Seq: 1}, nil }}
}

// appendWithin appends once with a deadline, so that a client retrying a
// failing connection returns.
func appendWithin(c *Client, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, err := c.Append(ctx, "t", []byte("x"), AppendOptions{})
	return err
}

func quickOptions(o Options) Options {
	o.AttemptTimeout, o.MinBackoff, o.MaxBackoff = time.Second, time.Millisecond, 5*time.Millisecond
	return o
}

// TestTokenReachesTheNodesAuth: over TLS, Options.Token is what a node's
// authorizer (rpc/auth) identifies the caller by: an app token may append,
// a reader token may not, and no token or an unknown one is refused.
func TestTokenReachesTheNodesAuth(t *testing.T) {
	pki := newPKI(t)
	const appToken, readerToken = "sst_app-secret", "sst_reader-secret"
	tokenFile := filepath.Join(t.TempDir(), "tokens")
	lines := fmt.Sprintf("# test\napp1 app %s\nro1 reader %s\n", auth.HashToken(appToken), auth.HashToken(readerToken))
	if err := os.WriteFile(tokenFile, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.LoadTokens(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	a := auth.New(auth.Config{Tokens: tokens})
	addr := serveWith(t, appendOK(), grpc.Creds(credentials.NewTLS(pki.serverTLS(false))), grpc.UnaryInterceptor(a.Unary))
	clientTLS, err := LoadTLS(pki.caFile, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		token string
		want  codes.Code
	}{
		{appToken, codes.OK},
		{readerToken, codes.PermissionDenied},
		{"", codes.Unauthenticated},
		{"sst_unknown", codes.Unauthenticated},
	} {
		c, err := New([]string{addr}, quickOptions(Options{TLS: clientTLS, Token: tc.token}))
		if err != nil {
			t.Fatal(err)
		}
		err = appendWithin(c, 5*time.Second)
		c.Close()
		if status.Code(err) != tc.want {
			t.Errorf("token %q: got %v, want %v", tc.token, err, tc.want)
		}
	}
}

func TestNewRefusesATokenItCannotSendSafely(t *testing.T) {
	for _, o := range []Options{
		{Token: "sst_x"}, // plaintext
		{Token: "sst x", TLS: &tls.Config{}},
		{Token: "sst_x\n", TLS: &tls.Config{}},
	} {
		c, err := New([]string{"127.0.0.1:7400"}, o)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "Token") {
			t.Errorf("token %q, TLS %t: got %v, want InvalidArgument about the Token", o.Token, o.TLS != nil, err)
		}
		if c != nil {
			c.Close()
		}
	}
}

// TestLoadTLS: the CA, the client certificate and the server name of
// LoadTLS decide which servers the client trusts and whether a server
// requiring client certificates accepts it.
func TestLoadTLS(t *testing.T) {
	pki := newPKI(t)
	mutual := serveWith(t, appendOK(), grpc.Creds(credentials.NewTLS(pki.serverTLS(true))))
	_, port, _ := net.SplitHostPort(mutual)
	otherCA := newPKI(t)
	for _, tc := range []struct {
		name                      string
		addr                      string
		ca, cert, key, serverName string
		ok                        bool
	}{
		{"mutual TLS", mutual, pki.caFile, pki.clientCert, pki.clientKey, "", true},
		{"by host name", "localhost:" + port, pki.caFile, pki.clientCert, pki.clientKey, "", true},
		{"server name override", mutual, pki.caFile, pki.clientCert, pki.clientKey, "localhost", true},
		{"no client certificate", mutual, pki.caFile, "", "", "", false},
		{"another CA", mutual, otherCA.caFile, pki.clientCert, pki.clientKey, "", false},
		{"a name the certificate lacks", mutual, pki.caFile, pki.clientCert, pki.clientKey, "n9.example", false},
	} {
		cfg, err := LoadTLS(tc.ca, tc.cert, tc.key, tc.serverName)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		c, err := New([]string{tc.addr}, quickOptions(Options{TLS: cfg, FailFast: true}))
		if err != nil {
			t.Fatal(err)
		}
		err = appendWithin(c, 10*time.Second)
		c.Close()
		if (err == nil) != tc.ok {
			t.Errorf("%s: got %v, want success %t", tc.name, err, tc.ok)
		}
	}
}

func TestLoadTLSRefusesBadFiles(t *testing.T) {
	pki := newPKI(t)
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ca, cert, key, want string
	}{
		{"missing CA", filepath.Join(pki.dir, "nope.pem"), "", "", "read CA"},
		{"CA not PEM", notPEM, "", "", "holds no PEM certificate"},
		{"cert without key", pki.caFile, pki.clientCert, "", "both its certificate and its key"},
		{"key without cert", pki.caFile, "", pki.clientKey, "both its certificate and its key"},
		{"key of another cert", pki.caFile, pki.clientCert, pki.serverKey, "load client certificate"},
	} {
		if _, err := LoadTLS(tc.ca, tc.cert, tc.key, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	cfg, err := LoadTLS("", "", "", "n1")
	if err != nil || cfg.RootCAs != nil || cfg.ServerName != "n1" || len(cfg.Certificates) != 0 {
		t.Errorf("no files: %+v, %v; want the system roots and the server name", cfg, err)
	}
}

func TestDialOptionsAreAppended(t *testing.T) {
	addr := serve(t, appendOK())
	var calls atomic.Int32
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		calls.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	c, err := New([]string{addr}, quickOptions(Options{DialOptions: []grpc.DialOption{count}}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := appendWithin(c, 5*time.Second); err != nil || calls.Load() == 0 {
		t.Fatalf("append: %v; the interceptor saw %d calls", err, calls.Load())
	}
}
