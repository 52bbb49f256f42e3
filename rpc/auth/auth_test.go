package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/internal/certs"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEveryMethodHasAPolicy(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{syncv1.Sync_ServiceDesc, syncv1.Peer_ServiceDesc, syncv1.Admin_ServiceDesc,
		syncv1.Records_ServiceDesc, syncv1.Devices_ServiceDesc, healthpb.Health_ServiceDesc} {
		for _, m := range sd.Methods {
			name := "/" + sd.ServiceName + "/" + m.MethodName
			if _, ok := methods[name]; !ok {
				t.Errorf("%s has no entry in the method table", name)
			}
		}
		for _, m := range sd.Streams {
			name := "/" + sd.ServiceName + "/" + m.StreamName
			if _, ok := methods[name]; !ok {
				t.Errorf("%s has no entry in the method table", name)
			}
		}
	}
}

func writeTokens(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens.txt")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTokenFile(t *testing.T) {
	good := HashToken("secret")
	tests := []struct {
		name  string
		lines []string
		err   string
	}{
		{"ok", []string{"# comment", "", "app1 app " + good}, ""},
		{"fields", []string{"app1 app"}, "line 1: want NAME ROLE SHA256HEX"},
		{"role", []string{"x root " + good}, `role "root"`},
		{"plain token", []string{"x app secret"}, "not a hex SHA-256"},
		{"short hash", []string{"x app " + good[:62]}, "not a hex SHA-256"},
		{"dup name", []string{"x app " + good, "x reader " + HashToken("other")}, "appears twice"},
		{"dup hash", []string{"x app " + good, "y reader " + good}, "another name's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadTokens(writeTokens(t, tt.lines...))
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("LoadTokens: %v, want %q", err, tt.err)
			}
		})
	}
}

func TestTokenReloadKeepsTheOldOnABadFile(t *testing.T) {
	p := writeTokens(t, "a app "+HashToken("one"))
	toks, err := LoadTokens(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("b app "+HashToken("two")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := toks.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := toks.lookup("one"); ok {
		t.Fatal("a removed token still works")
	}
	if id, ok := toks.lookup("two"); !ok || id.Name != "b" {
		t.Fatalf("the added token: %v %v", id, ok)
	}
	if err := os.WriteFile(p, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := toks.Reload(); err == nil {
		t.Fatal("Reload accepted garbage")
	}
	if _, ok := toks.lookup("two"); !ok {
		t.Fatal("a failed reload dropped the tokens")
	}
}

// caller builds the context a call arrives with.
type caller struct {
	token string
	cert  *x509.Certificate // client certificate (verified by TLS)
	peer  bool              // a peer TLS connection
	tls   bool
}

func (c caller) ctx() context.Context {
	ctx := context.Background()
	if c.token != "" {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+c.token))
	}
	if c.tls || c.cert != nil || c.peer {
		st := tls.ConnectionState{}
		if c.cert != nil {
			st.PeerCertificates = []*x509.Certificate{c.cert}
		}
		if c.peer {
			st.ServerName = certs.PeerServerName
			st.PeerCertificates = []*x509.Certificate{{Subject: pkix.Name{CommonName: "n2"}}}
		}
		ctx = peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: st}})
	}
	return ctx
}

func certWithOU(ou ...string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: "svc", OrganizationalUnit: ou}}
}

func TestAuthorize(t *testing.T) {
	toks, err := LoadTokens(writeTokens(t, "app1 app "+HashToken("app-secret"), "ro reader "+HashToken("ro-secret"), "ops admin "+HashToken("admin-secret")))
	if err != nil {
		t.Fatal(err)
	}
	secured := New(Config{Tokens: toks, ClientCerts: true, PeerTLS: true})
	open := New(Config{})
	const (
		appendM  = "/syncstore.v1.Sync/Append"
		pull     = "/syncstore.v1.Sync/Pull"
		shardMap = "/syncstore.v1.Admin/ShardMap"
		remove   = "/syncstore.v1.Admin/RemoveNode"
		deliver  = "/syncstore.v1.Peer/Deliver"
		join     = "/syncstore.v1.Admin/Join"
		health   = "/grpc.health.v1.Health/Check"
	)
	tests := []struct {
		name   string
		a      *Authorizer
		who    caller
		method string
		want   codes.Code
	}{
		{"no credentials", secured, caller{tls: true}, appendM, codes.Unauthenticated},
		{"bad token", secured, caller{token: "nope", tls: true}, appendM, codes.Unauthenticated},
		{"app appends", secured, caller{token: "app-secret", tls: true}, appendM, codes.OK},
		{"reader pulls", secured, caller{token: "ro-secret", tls: true}, pull, codes.OK},
		{"reader appends", secured, caller{token: "ro-secret", tls: true}, appendM, codes.PermissionDenied},
		{"app calls admin", secured, caller{token: "app-secret", tls: true}, remove, codes.PermissionDenied},
		{"app reads the shard map", secured, caller{token: "app-secret", tls: true}, shardMap, codes.OK},
		{"admin calls admin", secured, caller{token: "admin-secret", tls: true}, remove, codes.OK},
		{"admin appends", secured, caller{token: "admin-secret", tls: true}, appendM, codes.OK},
		{"admin forges a delivery", secured, caller{token: "admin-secret", tls: true}, deliver, codes.PermissionDenied},
		{"app forges a delivery", secured, caller{token: "app-secret", tls: true}, deliver, codes.PermissionDenied},
		{"admin joins a node", secured, caller{token: "admin-secret", tls: true}, join, codes.PermissionDenied},
		{"peer delivers", secured, caller{peer: true}, deliver, codes.OK},
		{"peer joins", secured, caller{peer: true}, join, codes.OK},
		{"peer forwards an append", secured, caller{peer: true}, appendM, codes.OK},
		{"app certificate appends", secured, caller{cert: certWithOU("app")}, appendM, codes.OK},
		{"reader certificate appends", secured, caller{cert: certWithOU("reader")}, appendM, codes.PermissionDenied},
		{"certificate without a role", secured, caller{cert: certWithOU()}, appendM, codes.Unauthenticated},
		{"certificate with a peer OU", secured, caller{cert: certWithOU("peer")}, deliver, codes.PermissionDenied},
		{"bad token beside a good certificate", secured, caller{token: "nope", cert: certWithOU("admin")}, appendM, codes.Unauthenticated},
		{"health is open", secured, caller{}, health, codes.OK},
		{"unlisted method", secured, caller{token: "admin-secret", tls: true}, "/syncstore.v1.Admin/Future", codes.PermissionDenied},
		{"auth off", open, caller{}, remove, codes.OK},
		{"auth off, peer method", open, caller{}, deliver, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.a.authorize(tt.who.ctx(), tt.method)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
		})
	}
	var m dto.Metric
	if err := secured.refused.WithLabelValues("unauthenticated", "syncstore.v1.Sync").Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 4 {
		t.Fatalf("unauthenticated refusals of Sync counted %v, want 4", got)
	}
}
