package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

func TestNewRefusesAddressesThatAreNotHostPort(t *testing.T) {
	for _, addr := range []string{"nonsense", "127.0.0.1", ":7400", "host:", "host:http", "host:0", "host:70000", "[::1", "a:1:2"} {
		c, err := New([]string{"127.0.0.1:7400", addr}, Options{})
		if !errors.Is(err, ErrInvalidArgument) || status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"`+addr+`"`) {
			t.Errorf("%q: got %v; want InvalidArgument naming the address", addr, err)
		}
		if c != nil {
			c.Close()
		}
	}
	for _, addr := range []string{"127.0.0.1:7400", "localhost:7400", "[::1]:7400", "n1.example:1"} {
		c, err := New([]string{addr}, Options{})
		if err != nil {
			t.Errorf("%q: %v", addr, err)
			continue
		}
		c.Close()
	}
}

// refusedAddr is an address nothing listens on (a port just freed).
func refusedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func failFastClient(t *testing.T, addrs ...string) *Client {
	t.Helper()
	c, err := New(addrs, quickOptions(Options{FailFast: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestFailFastGivesUpWhenEveryAddressRefuses: with FailFast, a call gives
// up at once when no address takes a connection, naming each and why,
// long before its deadline.
func TestFailFastGivesUpWhenEveryAddressRefuses(t *testing.T) {
	for _, n := range []int{1, 3} {
		var addrs []string
		for range n {
			addrs = append(addrs, refusedAddr(t))
		}
		c := failFastClient(t, addrs...)
		start := time.Now()
		err := appendWithin(c, 10*time.Second)
		if took := time.Since(start); took > time.Second {
			t.Errorf("%d addresses: gave up after %v", n, took)
		}
		if !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%d addresses: got %v; want ErrUnreachable before the deadline", n, err)
		}
		for _, a := range addrs {
			if !strings.Contains(err.Error(), a+": connect: connection refused") {
				t.Errorf("%d addresses: %q does not say that %s refused", n, err, a)
			}
		}
	}
}

// TestFailFastStillFailsOver: FailFast gives up only when every address
// refuses; one node up (even one saying Unavailable for a while, as during
// an election) is reached.
func TestFailFastStillFailsOver(t *testing.T) {
	electing := &fakeSync{answer: func(call int) (*syncv1.AppendResponse, error) {
		if call <= 3 {
			return nil, status.Error(codes.Unavailable, "node: no leader")
		}
		return &syncv1.AppendResponse{Seq: uint64(call)}, nil
	}}
	c := failFastClient(t, refusedAddr(t), serve(t, electing), refusedAddr(t))
	for i := range 10 {
		if err := appendWithin(c, 10*time.Second); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// TestWithoutFailFastRefusalsAreRetried: by default a refused connection is
// retried until the context ends (a node restarting is reached when it is
// back), and the error at the deadline names what was refused.
func TestWithoutFailFastRefusalsAreRetried(t *testing.T) {
	addr := refusedAddr(t)
	c := newClient(t, addr)
	err := appendWithin(c, 300*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "cannot reach "+addr) {
		t.Fatalf("got %v; want the deadline, naming %s", err, addr)
	}

	done := make(chan error, 1)
	go func() { done <- appendWithin(c, 20*time.Second) }()
	waitUntil(t, "the client finds the address refused", func() bool {
		conn, err := c.connTo(addr)
		return err == nil && conn.GetState() == connectivity.TransientFailure
	})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	s := grpc.NewServer()
	syncv1.RegisterSyncServer(s, appendOK())
	go s.Serve(lis)
	defer s.Stop()
	if err := <-done; err != nil {
		t.Fatalf("the append did not reach the node once it was up: %v", err)
	}
}

// TestFailFastOnAFailedHandshake: TLS to a plaintext port fails fast too,
// saying why.
func TestFailFastOnAFailedHandshake(t *testing.T) {
	pki := newPKI(t)
	cfg, err := LoadTLS(pki.caFile, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New([]string{serve(t, appendOK())}, quickOptions(Options{FailFast: true, TLS: cfg}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	err = appendWithin(c, 10*time.Second)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "handshake") || time.Since(start) > time.Second {
		t.Fatalf("TLS to plaintext: %v after %v; want a prompt ErrUnreachable about the handshake", err, time.Since(start))
	}

	plain := failFastClient(t, serveWith(t, appendOK(), grpc.Creds(credentials.NewTLS(pki.serverTLS(false)))))
	start = time.Now()
	if err := appendWithin(plain, 10*time.Second); !errors.Is(err, ErrUnreachable) || time.Since(start) > time.Second {
		t.Fatalf("plaintext to TLS: %v after %v; want a prompt ErrUnreachable", err, time.Since(start))
	}
}

// TestFailFastEndsSubscriptionsAndWatches: a Subscription and a
// WatchCollection whose every node refuses end with ErrUnreachable.
func TestFailFastEndsSubscriptionsAndWatches(t *testing.T) {
	addr := refusedAddr(t)
	c := failFastClient(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, o := range []SubscribeOptions{{}, {NotifyOnly: true}} {
		sub, err := c.Subscribe(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.Add("t", 0); err != nil {
			t.Fatal(err)
		}
		for range sub.Events() {
		}
		if err := sub.Err(); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), addr) {
			t.Errorf("subscription %+v ended with %v; want ErrUnreachable naming %s", o, err, addr)
		}
		sub.Close()
	}
	err := c.WatchCollection(ctx, "c", 0, func(CollectionUpdate) error { return nil })
	if !errors.Is(err, ErrUnreachable) || ctx.Err() != nil {
		t.Errorf("watch: %v; want ErrUnreachable before the deadline", err)
	}
}
