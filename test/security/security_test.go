// Package security tests syncd's TLS, peer mutual TLS, tokens and roles over
// real connections to real syncd processes: who is refused with which code,
// that refused calls change nothing, that a node of another CA cannot join,
// and that certificates and tokens reload on SIGHUP while traffic runs.
package security

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/internal/devcerts"
	"github.com/syncstore/syncstore/internal/testproc"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// cluster is three syncd processes with TLS, client certificates, tokens
// and an encrypted gossip, all on 127.0.0.1.
type cluster struct {
	certs  string // devcerts directory
	bundle *devcerts.Bundle
	names  []string
	procs  map[string]*testproc.Proc
	addrs  map[string]string // gRPC
}

func nodeFlags(dir, certsDir, name string) []string {
	f := func(n string) string { return filepath.Join(certsDir, n) }
	return []string{
		"--node-id", name, "--data-dir", dir,
		"--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
		"--shards", "2", "--digest-check-interval", "0",
		"--tls-cert", f(name + ".pem"), "--tls-key", f(name + "-key.pem"), "--client-ca", f("ca.pem"),
		"--peer-cert", f(name + ".pem"), "--peer-key", f(name + "-key.pem"), "--peer-ca", f("ca.pem"),
		"--token-file", f("tokens.txt"),
	}
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{certs: t.TempDir(), names: []string{"n1", "n2", "n3"}, procs: map[string]*testproc.Proc{}, addrs: map[string]string{}}
	b, err := devcerts.New(devcerts.Options{Nodes: c.names})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(c.certs, true); err != nil {
		t.Fatal(err)
	}
	c.bundle = b
	key := "--gossip-key-file=" + filepath.Join(c.certs, "gossip.key")
	for i, name := range c.names {
		args := append(nodeFlags(t.TempDir(), c.certs, name), key)
		if i > 0 {
			args = append(args, "--join", c.addrs["n1"])
		}
		p := testproc.Start(t, name, syncdBin, args...)
		c.procs[name] = p
		c.addrs[name] = p.WaitLine(t, 0, testproc.Listening, 30*time.Second)[1]
		if i > 0 {
			p.WaitLine(t, 0, regexp.MustCompile(`msg="joined the cluster"`), 60*time.Second)
		}
	}
	admin := c.client(t, "admin", client.Options{})
	testutil.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, name := range c.names {
			if err := c.serving(ctx, name); err != nil {
				return err
			}
		}
		_, err := admin.Append(ctx, "warmup", []byte("x"), client.AppendOptions{})
		return err
	})
	return c
}

// serving asks a node's health service (open to anyone) over TLS.
func (c *cluster) serving(ctx context.Context, name string) error {
	conn, err := grpc.NewClient(c.addrs[name], grpc.WithTransportCredentials(credentials.NewTLS(c.tlsFor("", ""))))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("%s health: %w", name, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s is %v", name, resp.GetStatus())
	}
	return nil
}

// tlsFor is a client TLS config trusting the cluster's CA, with the client
// certificate of role (none for "") or the given files.
func (c *cluster) tlsFor(role, certFile string) *tls.Config {
	var cert, key string
	switch {
	case certFile != "":
		cert, key = certFile, strings.TrimSuffix(certFile, ".pem")+"-key.pem"
	case role != "":
		cert, key = filepath.Join(c.certs, "client-"+role+".pem"), filepath.Join(c.certs, "client-"+role+"-key.pem")
	}
	cfg, err := client.LoadTLS(filepath.Join(c.certs, "ca.pem"), cert, key, "")
	if err != nil {
		panic(err)
	}
	return cfg
}

// client is a routing client with role's token.
func (c *cluster) client(t *testing.T, role string, o client.Options) *client.Client {
	t.Helper()
	if o.TLS == nil {
		o.TLS = c.tlsFor("", "")
	}
	if role != "" {
		o.Token = c.bundle.Token(role)
	}
	cl, err := client.New(c.addrList(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func (c *cluster) addrList() []string {
	var out []string
	for _, n := range c.names {
		out = append(out, c.addrs[n])
	}
	return out
}

func (c *cluster) rawConn(t testing.TB, cfg *tls.Config, name string) *grpc.ClientConn {
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(c.addrs[name], grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// digests reads every node's replica digests (as admin).
func (c *cluster) digests(t *testing.T) map[string]map[uint64]string {
	t.Helper()
	out := map[string]map[uint64]string{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range c.names {
		conn := c.rawConn(t, c.tlsFor("", ""), name)
		resp, err := syncv1.NewAdminClient(conn).Digests(withToken(ctx, c.bundle.Token("admin")), &syncv1.DigestsRequest{})
		conn.Close()
		if err != nil {
			t.Fatalf("digests of %s: %v", name, err)
		}
		out[name] = resp.GetDigests()
	}
	return out
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func TestSecurity(t *testing.T) {
	c := startCluster(t)
	app := c.client(t, "app", client.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := app.Append(ctx, "alice", []byte("hello"), client.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	// Digests are stable once every node holds every group (each group
	// leader sets its ranges and cluster version before it adds replicas)
	// and every replica applied the same: wait for it.
	var before map[string]map[uint64]string
	testutil.Eventually(t, 30*time.Second, func() error {
		before = c.digests(t)
		for _, n := range c.names[1:] {
			if len(before[n]) != len(before["n1"]) {
				return fmt.Errorf("%s holds groups %v, n1 %v", n, slices.Sorted(maps.Keys(before[n])), slices.Sorted(maps.Keys(before["n1"])))
			}
			for g, d := range before["n1"] {
				if od, ok := before[n][g]; !ok || od != d {
					return fmt.Errorf("group %d differs on %s", g, n)
				}
			}
		}
		return nil
	})

	t.Run("refusals", func(t *testing.T) { testRefusals(t, c) })
	t.Run("forged delivery", func(t *testing.T) { testForgedDelivery(t, c) })
	t.Run("plaintext", func(t *testing.T) { testPlaintext(t, c) })
	t.Run("node of another CA", func(t *testing.T) { testForeignNode(t, c) })

	if after := c.digests(t); !maps.EqualFunc(before, after, maps.Equal) {
		t.Fatalf("refused calls changed the state:\nbefore %v\nafter  %v", before, after)
	}
	if head, err := app.Head(ctx, "alice", client.Linearizable); err != nil || head != 1 {
		t.Fatalf("alice's head %d, %v; want 1", head, err)
	}

	t.Run("reload on SIGHUP mid-traffic", func(t *testing.T) { testReload(t, c) })
}

func testRefusals(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	appendCall := func(cl *client.Client) error {
		_, err := cl.Append(ctx, "alice", []byte("intruder"), client.AppendOptions{})
		return err
	}
	removeCall := func(cl *client.Client) error {
		return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
			_, err := a.RemoveNode(ctx, &syncv1.RemoveNodeRequest{NodeId: "n3"})
			return err
		})
	}
	pullCall := func(cl *client.Client) error {
		_, err := cl.Pull(ctx, "alice", 0, 10, client.Linearizable)
		return err
	}
	tests := []struct {
		name string
		cl   *client.Client
		call func(*client.Client) error
		want codes.Code
		is   error
	}{
		{"no token", c.client(t, "", client.Options{}), appendCall, codes.Unauthenticated, client.ErrUnauthenticated},
		{"bad token", c.client(t, "", client.Options{Token: "sst_not-a-token"}), appendCall, codes.Unauthenticated, client.ErrUnauthenticated},
		{"reader writes", c.client(t, "reader", client.Options{}), appendCall, codes.PermissionDenied, client.ErrPermissionDenied},
		{"reader reads", c.client(t, "reader", client.Options{}), pullCall, codes.OK, nil},
		{"app calls Admin", c.client(t, "app", client.Options{}), removeCall, codes.PermissionDenied, client.ErrPermissionDenied},
		{"reader certificate writes", c.client(t, "", client.Options{TLS: c.tlsFor("reader", "")}), appendCall, codes.PermissionDenied, client.ErrPermissionDenied},
		{"app certificate calls Admin", c.client(t, "", client.Options{TLS: c.tlsFor("app", "")}), removeCall, codes.PermissionDenied, client.ErrPermissionDenied},
		{"app certificate reads", c.client(t, "", client.Options{TLS: c.tlsFor("app", "")}), pullCall, codes.OK, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(tt.cl)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("%v is not %v", err, tt.is)
			}
		})
	}
}

// A forged Peer.Deliver would write into any member's timeline: only a
// peer certificate may make one.
func testForgedDelivery(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &syncv1.DeliverRequest{GroupId: proto.Uint64(1), Items: []*syncv1.DeliveryItem{{
		Timeline: proto.String("alice"), Conversation: proto.String("room"), ConversationSeq: proto.Uint64(1)}}}
	tests := []struct {
		name  string
		tls   *tls.Config
		token string
	}{
		{"admin token", c.tlsFor("", ""), c.bundle.Token("admin")},
		{"app certificate", c.tlsFor("app", ""), ""},
		{"admin certificate", c.tlsFor("admin", ""), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := c.rawConn(t, tt.tls, "n1")
			defer conn.Close()
			cctx := ctx
			if tt.token != "" {
				cctx = withToken(ctx, tt.token)
			}
			_, err := syncv1.NewPeerClient(conn).Deliver(cctx, req)
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("forged Deliver: %v, want PERMISSION_DENIED", err)
			}
		})
	}
}

// Plaintext to a TLS port fails at once with UNAVAILABLE, and the port
// serves TLS callers as before.
func testPlaintext(t *testing.T, c *cluster) {
	conn := c.rawConn(t, nil, "n1")
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := syncv1.NewSyncClient(conn).Head(ctx, &syncv1.HeadRequest{Timeline: proto.String("alice")})
	if status.Code(err) != codes.Unavailable || time.Since(start) > 5*time.Second {
		t.Fatalf("plaintext Head: %v after %v, want UNAVAILABLE at once", err, time.Since(start))
	}
	if err := c.serving(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
}

// A node whose certificate comes from another CA cannot join: the join
// fails at the TLS handshake, the node exits, and the cluster still has
// three nodes.
func testForeignNode(t *testing.T, c *cluster) {
	other := t.TempDir()
	if err := devcerts.Generate(other, devcerts.Options{Nodes: []string{"n4"}}); err != nil {
		t.Fatal(err)
	}
	// Its own client files from the other CA too, so only the peer check can refuse it.
	args := append(nodeFlags(t.TempDir(), other, "n4"), "--join", c.addrs["n1"], "--gossip-key="+c.bundle.GossipKeyBase64())
	p := testproc.Start(t, "n4", syncdBin, args...)
	p.WaitLine(t, 0, regexp.MustCompile(`join failed.*TLS handshake refused`), 60*time.Second)
	if err := p.Wait(t, 30*time.Second); err == nil {
		t.Fatal("a node that failed to join exited 0")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin := c.client(t, "admin", client.Options{})
	var nodes *syncv1.ListNodesResponse
	err := admin.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
		nodes, err = a.ListNodes(ctx, &syncv1.ListNodesRequest{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.GetNodes()) != 3 {
		t.Fatalf("nodes after a foreign join: %v", nodes.GetNodes())
	}
}

// testReload renews n1's certificate and replaces the token file while
// writers append, then SIGHUPs every node: new connections see the new
// certificate, the new token works and the dropped one is refused, and
// the writers see no error.
func testReload(t *testing.T, c *cluster) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	app := c.client(t, "app", client.Options{})
	type result struct {
		acked int
		err   error
	}
	const writers = 4
	var acked atomic.Int64
	results := make(chan result, writers)
	stop := make(chan struct{})
	for w := range writers {
		go func() {
			r := result{}
			defer func() { results <- r }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				actx, acancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := app.Append(actx, fmt.Sprintf("reload-%d", w), []byte("x"), client.AppendOptions{})
				acancel()
				if err != nil {
					r.err = err
					return
				}
				r.acked++
				acked.Add(1)
			}
		}()
	}

	oldSerial := c.servedSerial(t, "n1")
	if _, err := c.bundle.RenewNode("n1", c.certs); err != nil {
		t.Fatal(err)
	}
	// The token file: app stays, reader goes, a new app token comes.
	newToken := "sst_reloaded-token-for-the-test"
	var lines []string
	for _, tok := range c.bundle.Tokens {
		if tok.Role != "reader" {
			lines = append(lines, fmt.Sprintf("%s %s %s", tok.Name, tok.Role, devcerts.HashToken(tok.Secret)))
		}
	}
	lines = append(lines, "app2 app "+devcerts.HashToken(newToken))
	if err := os.WriteFile(filepath.Join(c.certs, "tokens.txt"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A gossip key rotation's first step: a new key that decrypts too.
	newKey := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	if err := os.WriteFile(filepath.Join(c.certs, "gossip.key"), []byte(c.bundle.GossipKeyBase64()+"\n"+newKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range c.names {
		mark := c.procs[name].Lines()
		c.procs[name].Signal(t, syscall.SIGHUP)
		c.procs[name].WaitLine(t, mark, regexp.MustCompile(`msg="reloaded tokens"`), 10*time.Second)
		c.procs[name].WaitLine(t, mark, regexp.MustCompile(`msg="reloaded gossip keys" keys=2`), 10*time.Second)
	}
	if got := c.servedSerial(t, "n1"); got == oldSerial {
		t.Fatalf("n1 serves its old certificate (serial %s) after SIGHUP", got)
	}
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	if _, err := c.client(t, "", client.Options{Token: newToken}).Append(cctx, "reload-new", []byte("x"), client.AppendOptions{}); err != nil {
		t.Fatalf("the added token: %v", err)
	}
	if _, err := c.client(t, "reader", client.Options{}).Pull(cctx, "alice", 0, 1, client.Linearizable); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the dropped token: %v, want UNAUTHENTICATED", err)
	}
	// Peers still replicate with n1's new certificate: a write acknowledged
	// by a quorum after new connections to it.
	testutil.Eventually(t, 30*time.Second, func() error {
		return c.serving(cctx, "n1")
	})
	// The writers go on past the reload on their old connections and new ones.
	afterReload := acked.Load()
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := acked.Load() - afterReload; n < 100 {
			return fmt.Errorf("%d appends acknowledged since the reload", n)
		}
		return nil
	})
	close(stop)
	total := 0
	for range writers {
		r := <-results
		if r.err != nil {
			t.Fatalf("a writer failed during the reload: %v", r.err)
		}
		total += r.acked
	}
	if total == 0 {
		t.Fatal("no write was acknowledged during the reload")
	}
	t.Logf("%d appends acknowledged across the reload, none failed", total)
	heads := 0
	for w := range writers {
		head, err := app.Head(cctx, fmt.Sprintf("reload-%d", w), client.Linearizable)
		if err != nil {
			t.Fatal(err)
		}
		heads += int(head)
	}
	// Each append was acknowledged once and none was lost or doubled.
	if heads != total {
		t.Fatalf("timelines hold %d entries, %d appends were acknowledged", heads, total)
	}
}

// servedSerial is the serial of the certificate a new TLS connection to
// the node's gRPC port gets.
func (c *cluster) servedSerial(t *testing.T, name string) string {
	t.Helper()
	cfg := c.tlsFor("", "")
	d := tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", c.addrs[name])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
}
