package client

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// fakeConversations fails the first Send (outcome unknown) and records
// what it is asked.
type fakeConversations struct {
	syncv1.UnimplementedSyncServer
	mu      sync.Mutex
	sends   []*syncv1.SendRequest
	history []*syncv1.HistoryRequest
}

func (f *fakeConversations) Send(_ context.Context, req *syncv1.SendRequest) (*syncv1.SendResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends = append(f.sends, req)
	if len(f.sends) == 1 {
		return nil, status.Error(codes.Unavailable, "node: outcome unknown")
	}
	return &syncv1.SendResponse{Seq: 7, Recipients: uint32(len(req.GetRecipients()) + 1)}, nil
}

func (f *fakeConversations) History(_ context.Context, req *syncv1.HistoryRequest) (*syncv1.HistoryResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.history = append(f.history, req)
	return &syncv1.HistoryResponse{Status: syncv1.HistoryStatus_HISTORY_STATUS_MORE, Entries: []*syncv1.Entry{{Timeline: req.GetTimeline(), Seq: 4}}, HeadSeq: 9}, nil
}

func serveSync(t *testing.T, srv syncv1.SyncServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	syncv1.RegisterSyncServer(s, srv)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func TestSendRetriesWithOneKey(t *testing.T) {
	f := &fakeConversations{}
	c := newClient(t, serveSync(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Send(ctx, "conv", "alice", []string{"bob", "carol"}, []byte("hi"), AppendOptions{Metadata: map[string]string{"k": "v"}})
	if err != nil || resp.GetSeq() != 7 || resp.GetRecipients() != 3 {
		t.Fatalf("got %v, %v; want seq 7 for 3 recipients", resp, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sends) != 2 || !proto.Equal(f.sends[0], f.sends[1]) {
		t.Fatalf("attempts %v; want two identical ones", f.sends)
	}
	req := f.sends[0]
	if req.GetConversation() != "conv" || req.GetSender() != "alice" || len(req.GetRecipients()) != 2 ||
		string(req.GetPayload()) != "hi" || req.GetIdempotencyKey() == "" || req.GetMetadata()["k"] != "v" {
		t.Fatalf("sent %v", req)
	}
}

func TestHistoryAsksForThePage(t *testing.T) {
	f := &fakeConversations{}
	c := newClient(t, serveSync(t, f))
	resp, err := c.History(context.Background(), "conv", 5, 10, Stale)
	if err != nil || resp.GetStatus() != syncv1.HistoryStatus_HISTORY_STATUS_MORE || len(resp.GetEntries()) != 1 {
		t.Fatalf("got %v, %v", resp, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	req := f.history[0]
	if req.GetTimeline() != "conv" || req.GetBeforeSeq() != 5 || req.GetLimit() != 10 || req.GetConsistency() != Stale {
		t.Fatalf("asked %v", req)
	}
}
