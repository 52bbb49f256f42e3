package heartbeat

import (
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/node/raftmux"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func coalescer(t *testing.T, id string) (*Coalescer, raft.ServerAddress) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	mux, err := raftmux.Listen("127.0.0.1:0", id, log)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := mux.Layer(raftmux.HeartbeatGroup)
	if err != nil {
		t.Fatal(err)
	}
	c := New(layer, log)
	t.Cleanup(func() {
		c.Close()
		mux.Close()
	})
	return c, raft.ServerAddress(mux.Addr().String())
}

func heartbeatReq(term uint64) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("n1"), Addr: []byte("127.0.0.1:1")}, Term: term, Leader: []byte("127.0.0.1:1")}
}

// Heartbeats of many groups to one node share frames, and each gets its
// own group's answer (or its own group's refusal).
func TestHeartbeatsOfManyGroupsShareFramesAndKeepTheirAnswers(t *testing.T) {
	a, _ := coalescer(t, "a")
	b, bAddr := coalescer(t, "b")
	const groups = 64
	for g := uint64(1); g <= groups; g++ {
		if g == 13 {
			continue // b has no replica of group 13
		}
		b.setHandler(g, func(rpc raft.RPC) {
			req := rpc.Command.(*raft.AppendEntriesRequest)
			if string(req.ID) != "n1" || string(req.Leader) != "127.0.0.1:1" {
				rpc.Respond(nil, errorString("header lost"))
				return
			}
			rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: g * 10, Success: g%2 == 0}, nil)
		})
	}
	var wg sync.WaitGroup
	errs := make([]error, groups+1)
	resps := make([]raft.AppendEntriesResponse, groups+1)
	for g := uint64(1); g <= groups; g++ {
		wg.Go(func() { errs[g] = a.send(bAddr, g, heartbeatReq(100+g), &resps[g]) })
	}
	wg.Wait()
	for g := uint64(1); g <= groups; g++ {
		if g == 13 {
			if errs[g] == nil || !strings.Contains(errs[g].Error(), "no replica of group 13") {
				t.Fatalf("group 13: %v, want its own refusal", errs[g])
			}
			continue
		}
		r := resps[g]
		if errs[g] != nil || r.Term != 100+g || r.LastLog != g*10 || r.Success != (g%2 == 0) {
			t.Fatalf("group %d: %+v %v", g, r, errs[g])
		}
	}
	if a.Heartbeats.Load() != groups || a.Frames.Load() >= groups/4 {
		t.Fatalf("%d heartbeats in %d frames: not coalesced", a.Heartbeats.Load(), a.Frames.Load())
	}
	t.Logf("%d heartbeats in %d frames", a.Heartbeats.Load(), a.Frames.Load())
}

func TestIsHeartbeat(t *testing.T) {
	cases := []struct {
		name string
		req  raft.AppendEntriesRequest
		want bool
	}{
		{"heartbeat", *heartbeatReq(3), true},
		{"no term", raft.AppendEntriesRequest{Leader: []byte("x")}, false},
		{"entries", raft.AppendEntriesRequest{Term: 3, Leader: []byte("x"), Entries: []*raft.Log{{}}}, false},
		{"commit index", raft.AppendEntriesRequest{Term: 3, Leader: []byte("x"), LeaderCommitIndex: 5}, false},
		{"prev entry", raft.AppendEntriesRequest{Term: 3, Leader: []byte("x"), PrevLogEntry: 5, PrevLogTerm: 2}, false},
	}
	for _, tc := range cases {
		if got := isHeartbeat(&tc.req); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// A group whose Raft does not answer (one shutting down ignores
// heartbeats) fails alone; the others of its frame are answered.
func TestAGroupThatDoesNotAnswerFailsAlone(t *testing.T) {
	a, _ := coalescer(t, "a")
	b, bAddr := coalescer(t, "b")
	for _, g := range []uint64{6, 7, 8} {
		b.setHandler(g, func(rpc raft.RPC) {
			if g == 7 {
				return // never answers
			}
			rpc.Respond(&raft.AppendEntriesResponse{Term: rpc.Command.(*raft.AppendEntriesRequest).Term, Success: true}, nil)
		})
	}
	var wg sync.WaitGroup
	errs := map[uint64]error{}
	var mu sync.Mutex
	for _, g := range []uint64{6, 7, 8} {
		wg.Go(func() {
			var resp raft.AppendEntriesResponse
			err := a.send(bAddr, g, heartbeatReq(5), &resp)
			if err == nil && (!resp.Success || resp.Term != 5) {
				err = errorString("wrong answer")
			}
			mu.Lock()
			errs[g] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	if errs[6] != nil || errs[8] != nil || errs[7] == nil || !strings.Contains(errs[7].Error(), "did not answer") {
		t.Fatalf("answers: %v", errs)
	}
}

// While a caller waits on heartbeats (Urgent), a group's heartbeats skip
// the coalescer and its window and go on the group's own connections; then
// they are coalesced again.
func TestUrgentHeartbeatsGoAtOnce(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	node := func(id string) (*raftmux.Mux, *Coalescer) {
		mux, err := raftmux.Listen("127.0.0.1:0", id, log)
		if err != nil {
			t.Fatal(err)
		}
		layer, err := mux.Layer(raftmux.HeartbeatGroup)
		if err != nil {
			t.Fatal(err)
		}
		c := New(layer, log)
		t.Cleanup(func() {
			c.Close()
			mux.Close()
		})
		return mux, c
	}
	aMux, aCoal := node("a")
	bMux, bCoal := node("b")
	const group = 5
	groupTransport := func(m *raftmux.Mux) *raft.NetworkTransport {
		layer, err := m.Layer(group)
		if err != nil {
			t.Fatal(err)
		}
		nt := raft.NewNetworkTransport(layer, 2, time.Second, io.Discard)
		t.Cleanup(func() { nt.Close() })
		return nt
	}
	answer := func(rpc raft.RPC) {
		rpc.Respond(&raft.AppendEntriesResponse{Term: rpc.Command.(*raft.AppendEntriesRequest).Term, Success: true}, nil)
	}
	bTrans := groupTransport(bMux)
	bTrans.SetHeartbeatHandler(answer)
	bCoal.setHandler(group, answer)
	tr := Wrap(groupTransport(aMux), group, aCoal)
	send := func() {
		t.Helper()
		var resp raft.AppendEntriesResponse
		if err := tr.AppendEntries("b", raft.ServerAddress(bMux.Addr().String()), heartbeatReq(7), &resp); err != nil || !resp.Success {
			t.Fatalf("heartbeat: %+v %v", resp, err)
		}
	}
	send()
	if got := aCoal.Heartbeats.Load(); got != 1 {
		t.Fatalf("%d heartbeats through the coalescer, want 1", got)
	}
	done := tr.Urgent()
	send()
	send()
	if got := aCoal.Heartbeats.Load(); got != 1 {
		t.Fatalf("urgent heartbeats went through the coalescer (%d in all)", got)
	}
	done()
	send()
	if got := aCoal.Heartbeats.Load(); got != 2 {
		t.Fatalf("after Urgent ended: %d heartbeats through the coalescer, want 2", got)
	}
}
