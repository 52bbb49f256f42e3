package client

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// The faults chaosServe injects.
const (
	faultGap = iota
	faultMoved
	faultJump
	faultDuplicate
	faultBroken
	faultKinds
)

// chaosServe is node n's Subscribe: for each timeline added on a stream it
// sends the entries after after_seq, then new ones as the log grows, but
// misbehaves at random as a node can: a Gap or a Moved (to other) that drops
// the timeline, an entry past the next one, an old entry again, or the end
// of the whole stream.
func chaosServe(ctx context.Context, n *fakeNode, other string, grew <-chan struct{}, rng *rand.Rand, faults *[faultKinds]atomic.Int64) {
	type sub struct {
		st *fakeStream
		tl string
	}
	next := map[sub]uint64{} // the next seq to send
	for {
		select {
		case r := <-n.reqs:
			for _, tl := range r.req.GetRemove() {
				delete(next, sub{r.st, tl})
			}
			for _, a := range r.req.GetAdd() {
				next[sub{r.st, a.GetTimeline()}] = a.GetAfterSeq() + 1
			}
		case <-grew:
		case <-ctx.Done():
			return
		}
		for s, seq := range next {
			drop := func(st *fakeStream) { // the whole stream
				for s := range next {
					if s.st == st {
						delete(next, s)
					}
				}
			}
			send := func(ev *syncv1.SubscribeEvent) bool {
				if s.st.trySend(ev) != nil {
					drop(s.st)
					return false
				}
				return true
			}
			for head := n.log.head(s.tl); seq <= head; seq++ {
				x := rng.IntN(40)
				if x < faultKinds {
					faults[x].Add(1)
				}
				switch x {
				case faultGap:
					send(gapEvent(s.tl, seq))
					delete(next, s)
				case faultMoved:
					send(movedEvent(s.tl, other))
					delete(next, s)
				case faultJump:
					send(entry(s.tl, min(seq+1+uint64(rng.IntN(3)), head)))
				case faultDuplicate:
					send(entry(s.tl, 1+uint64(rng.Int64N(int64(seq)))))
				case faultBroken:
					s.st.fail(status.Error(codes.Unavailable, "chaos"))
					drop(s.st)
				}
				if _, ok := next[s]; !ok || !send(entry(s.tl, seq)) {
					break
				}
				next[s] = seq + 1
			}
		}
	}
}

// TestSubscribeSurvivesChaos: whatever the nodes do, the consumer gets
// every entry of every timeline exactly once, in order.
func TestSubscribeSurvivesChaos(t *testing.T) {
	const n = 400
	timelines := []string{"t", "u", "v"}
	h := newNodes(t)
	h.log.page = 50
	h.subscribe(t, SubscribeOptions{Buffer: 8})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var faults [faultKinds]atomic.Int64
	grew := []chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	for i, node := range []*fakeNode{h.a, h.b} {
		other := []string{h.b.addr, h.a.addr}[i]
		rng := rand.New(rand.NewPCG(42, uint64(i)))
		wg.Go(func() { chaosServe(ctx, node, other, grew[i], rng, &faults) })
	}
	// The timelines grow while they are followed.
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for size := uint64(n / 10); size <= n; size += 5 {
			for _, tl := range timelines {
				h.log.append(tl, size)
			}
			for _, g := range grew {
				select {
				case g <- struct{}{}:
				default:
				}
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	})
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, tl := range timelines {
		h.add(t, tl, 0)
	}
	got := h.takeWithin(t, n*len(timelines), 30*time.Second)
	for _, tl := range timelines {
		if g := of(tl, got); !slices.Equal(g, seqs(tl, 1, n)) {
			t.Fatalf("%s: got %q; want 1..%d once each, in order", tl, g, n)
		}
	}
	for kind := range faultKinds {
		if faults[kind].Load() == 0 {
			t.Errorf("fault %d never happened; the test proves less than it claims", kind)
		}
	}
	t.Logf("faults (gap, moved, jump, duplicate, broken): %d %d %d %d %d",
		faults[0].Load(), faults[1].Load(), faults[2].Load(), faults[3].Load(), faults[4].Load())
}
