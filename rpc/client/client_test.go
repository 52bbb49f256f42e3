package client

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSync answers Append with whatever answer returns, recording requests.
type fakeSync struct {
	syncv1.UnimplementedSyncServer
	mu     sync.Mutex
	keys   []string
	answer func(call int) (*syncv1.AppendResponse, error)
}

func (f *fakeSync) Append(_ context.Context, req *syncv1.AppendRequest) (*syncv1.AppendResponse, error) {
	f.mu.Lock()
	f.keys = append(f.keys, req.GetIdempotencyKey())
	call := len(f.keys)
	f.mu.Unlock()
	return f.answer(call)
}

func (f *fakeSync) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.keys...)
}

func serve(t *testing.T, f *fakeSync) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	syncv1.RegisterSyncServer(s, f)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func notLeader(addr string) error {
	st, _ := status.New(codes.Unavailable, "not the leader").WithDetails(&syncv1.NotLeader{LeaderId: "n2", LeaderAddr: addr})
	return st.Err()
}

func newClient(t *testing.T, addrs ...string) *Client {
	t.Helper()
	c, err := New(addrs, Options{AttemptTimeout: time.Second, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFollowsNotLeaderToTheLeader(t *testing.T) {
	leader := &fakeSync{answer: func(int) (*syncv1.AppendResponse, error) { return &syncv1.AppendResponse{Seq: 7}, nil }}
	leaderAddr := serve(t, leader)
	follower := &fakeSync{answer: func(int) (*syncv1.AppendResponse, error) { return nil, notLeader(leaderAddr) }}
	c := newClient(t, serve(t, follower))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		resp, err := c.Append(ctx, "t", []byte("x"), AppendOptions{IdempotencyKey: "k"})
		if err != nil || resp.GetSeq() != 7 {
			t.Fatalf("got %v, %v; want seq 7 from the leader", resp, err)
		}
	}
	if n := len(follower.calls()); n != 1 {
		t.Fatalf("the follower was asked %d times; after the first hint the client should go straight to the leader", n)
	}
}

func TestRetriesKeepTheIdempotencyKey(t *testing.T) {
	flaky := &fakeSync{answer: func(call int) (*syncv1.AppendResponse, error) {
		if call < 3 {
			return nil, status.Error(codes.Unavailable, "node: outcome unknown")
		}
		return &syncv1.AppendResponse{Seq: 1, Deduplicated: true}, nil
	}}
	c := newClient(t, serve(t, flaky))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, key := range []string{"given", ""} {
		flaky.mu.Lock()
		flaky.keys = nil
		flaky.mu.Unlock()
		if _, err := c.Append(ctx, "t", []byte("x"), AppendOptions{IdempotencyKey: key}); err != nil {
			t.Fatal(err)
		}
		keys := flaky.calls()
		if len(keys) != 3 || keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] || (key != "" && keys[0] != key) {
			t.Fatalf("key %q: attempts carried %q; want three attempts with one key", key, keys)
		}
	}
}

func TestDoesNotRetryBadInput(t *testing.T) {
	bad := &fakeSync{answer: func(int) (*syncv1.AppendResponse, error) {
		return nil, status.Error(codes.InvalidArgument, "timeline id is empty")
	}}
	c := newClient(t, serve(t, bad))
	_, err := c.Append(context.Background(), "", nil, AppendOptions{})
	if status.Code(err) != codes.InvalidArgument || len(bad.calls()) != 1 {
		t.Fatalf("got %v after %d calls; want InvalidArgument after one", err, len(bad.calls()))
	}
}

func TestGivesUpWhenTheContextEnds(t *testing.T) {
	down := &fakeSync{answer: func(int) (*syncv1.AppendResponse, error) { return nil, status.Error(codes.Unavailable, "no leader") }}
	c := newClient(t, serve(t, down))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Append(ctx, "t", nil, AppendOptions{})
	if !errors.Is(err, context.DeadlineExceeded) || status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v; want the deadline, carrying the last Unavailable", err)
	}
}

func TestNewNeedsAddresses(t *testing.T) {
	if _, err := New(nil, Options{}); !errors.Is(err, ErrNoAddresses) {
		t.Fatalf("got %v", err)
	}
}

// TestPinnedSendsEveryCallToItsNode: a pinned client ignores the shard
// map and leader hints (a checker reading each replica's own copy).
func TestPinnedSendsEveryCallToItsNode(t *testing.T) {
	m, err := shard.New(1, []shard.Group{{ID: 1, Ranges: []shard.Range{{Start: 0, End: shard.SlotCount}}, Replicas: []string{"n2"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, pinned := range []bool{false, true} {
		c, err := New([]string{"127.0.0.1:1"}, Options{Pinned: pinned})
		if err != nil {
			t.Fatal(err)
		}
		c.routes = &routes{m: m, addrs: map[string]string{"n2": "127.0.0.1:2"}}
		c.leaders[1] = "127.0.0.1:3"
		addr, _, _, err := c.target("alice")
		c.Close()
		want := "127.0.0.1:3" // the group's leader
		if pinned {
			want = "127.0.0.1:1"
		}
		if err != nil || addr != want {
			t.Errorf("pinned %t: a call goes to %s (%v), want %s", pinned, addr, err, want)
		}
	}
}
