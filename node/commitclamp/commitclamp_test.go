package commitclamp

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/node/raftmux"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClampKeepsCommitWithinWhatTheRequestVouchesFor(t *testing.T) {
	entries := func(n int) []*raft.Log { return make([]*raft.Log, n) }
	tests := []struct {
		name               string
		prev, commit, want uint64
		entries            int
	}{
		// A deposed leader holds a stale entry 10; the new leader matched 9
		// and committed its own 10 and 11: the follower may commit 9 only.
		{"empty request past the match", 9, 11, 9, 0},
		{"short request", 9, 20, 12, 3},
		{"commit below the request", 9, 5, 5, 3},
		{"commit at the request's end", 9, 12, 12, 3},
		{"nothing matched yet", 0, 7, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &raft.AppendEntriesRequest{PrevLogEntry: tc.prev, LeaderCommitIndex: tc.commit, Entries: entries(tc.entries)}
			Clamp(req)
			if req.LeaderCommitIndex != tc.want {
				t.Fatalf("commit %d, want %d", req.LeaderCommitIndex, tc.want)
			}
		})
	}
}

// What a wrapped transport receives reaches its consumer clamped, and its
// answer goes back to the sender.
func TestWrappedTransportDeliversClampedRequests(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	transport := func(id string) (*raft.NetworkTransport, *raftmux.Mux) {
		mux, err := raftmux.Listen("127.0.0.1:0", id, log)
		if err != nil {
			t.Fatal(err)
		}
		layer, err := mux.Layer(3)
		if err != nil {
			t.Fatal(err)
		}
		return raft.NewNetworkTransport(layer, 2, time.Second, io.Discard), mux
	}
	a, aMux := transport("a")
	b, bMux := transport("b")
	wrapped := Wrap(b)
	defer func() {
		wrapped.Close()
		a.Close()
		aMux.Close()
		bMux.Close()
	}()
	done := make(chan error, 1)
	var resp raft.AppendEntriesResponse
	go func() {
		req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("a"), Addr: []byte("x")}, Term: 3, PrevLogEntry: 9, PrevLogTerm: 2, LeaderCommitIndex: 11}
		done <- a.AppendEntries("b", raft.ServerAddress(bMux.Addr().String()), req, &resp)
	}()
	rpc := <-wrapped.Consumer()
	if got := rpc.Command.(*raft.AppendEntriesRequest).LeaderCommitIndex; got != 9 {
		t.Fatalf("Raft saw commit index %d, want 9", got)
	}
	rpc.Respond(&raft.AppendEntriesResponse{Term: 3, Success: true}, nil)
	if err := <-done; err != nil || !resp.Success {
		t.Fatalf("answer %+v %v", resp, err)
	}
}
