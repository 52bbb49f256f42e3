package outbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeGroup holds one conversation's jobs and messages.
type fakeGroup struct {
	mu       sync.Mutex
	jobs     []fsm.OutboxJob
	messages map[uint64]fsm.Entry
	done     []uint64
}

func (g *fakeGroup) ReadyLeader() bool { return true }

func (g *fakeGroup) Conversations(int) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.jobs) == 0 {
		return nil, nil
	}
	return []string{"c"}, nil
}

func (g *fakeGroup) Jobs(string, int) ([]fsm.OutboxJob, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.jobs), nil
}

func (g *fakeGroup) Message(_ string, seq uint64) (fsm.Entry, bool, error) {
	e, ok := g.messages[seq]
	return e, ok, nil
}

func (g *fakeGroup) Done(_ context.Context, _ string, seq uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = append(g.done, seq)
	g.jobs = slices.DeleteFunc(g.jobs, func(j fsm.OutboxJob) bool { return j.ConversationSeq == seq })
	return nil
}

// fakeRouter puts members "a*" in group 1, the others in group 2, and
// fails the first failures deliveries.
type fakeRouter struct {
	mu        sync.Mutex
	failures  int
	delivered []Delivery
}

func (r *fakeRouter) GroupFor(tl string) (shard.GroupID, error) {
	if strings.HasPrefix(tl, "a") {
		return 1, nil
	}
	return 2, nil
}

func (r *fakeRouter) Deliver(_ context.Context, _ shard.GroupID, batch []Delivery) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures > 0 {
		r.failures--
		return errors.New("leader unreachable")
	}
	r.delivered = append(r.delivered, batch...)
	return nil
}

// Every message reaches every member, in conversation order, each job is
// removed only after its message reached all members, a failed delivery
// is retried, and a message retention trimmed goes out light.
func TestOutboxDeliversEveryMessageInOrder(t *testing.T) {
	g := &fakeGroup{messages: map[uint64]fsm.Entry{
		1: {Seq: 1, Payload: []byte("one")},
		3: {Seq: 3, Payload: []byte("three")},
	}}
	for seq := uint64(1); seq <= 3; seq++ {
		g.jobs = append(g.jobs, fsm.OutboxJob{Conversation: "c", ConversationSeq: seq, Sender: "s",
			Recipients: []string{"alice", "bob"}, DeliverySeqs: []uint64{seq, seq}})
	}
	r := &fakeRouter{failures: 2}
	var retries atomic.Int64
	o := New(g, r, slog.New(slog.NewTextHandler(io.Discard, nil)), func(result string) {
		if result == "retry" {
			retries.Add(1)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { o.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	o.Poke()
	testutil.Eventually(t, 10*time.Second, func() error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if len(g.done) != 3 {
			return fmt.Errorf("done %v", g.done)
		}
		return nil
	})
	if !slices.Equal(g.done, []uint64{1, 2, 3}) {
		t.Fatalf("jobs done in order %v", g.done)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, member := range []string{"alice", "bob"} {
		var seqs []uint64
		for _, d := range r.delivered {
			if d.Timeline == member {
				seqs = append(seqs, d.ConversationSeq)
				if want := d.ConversationSeq != 2; want != (d.Payload != nil) || d.Light == want {
					t.Fatalf("message %d to %s: payload %q light %v", d.ConversationSeq, member, d.Payload, d.Light)
				}
			}
		}
		if !slices.Equal(seqs, []uint64{1, 2, 3}) {
			t.Fatalf("%s got %v", member, seqs)
		}
	}
	if retries.Load() == 0 {
		t.Fatal("the failed deliveries were not counted as retries")
	}
}

func TestBatchesKeepTheBounds(t *testing.T) {
	big := make([]byte, batchBytes/2+1)
	for _, tc := range []struct {
		name  string
		items []Delivery
		want  []int
	}{
		{"none", nil, nil},
		{"items bound", make([]Delivery, fsm.MaxDeliveryItems+1), []int{fsm.MaxDeliveryItems, 1}},
		{"bytes bound", []Delivery{{Payload: big}, {Payload: big}, {Payload: big}}, []int{1, 1, 1}},
		{"one oversized item still goes", []Delivery{{Payload: make([]byte, batchBytes+1)}}, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			for _, b := range batches(tc.items) {
				got = append(got, len(b))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("batch sizes %v, want %v", got, tc.want)
			}
		})
	}
}
